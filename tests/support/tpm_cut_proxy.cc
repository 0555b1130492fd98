// SPDX-License-Identifier: GPL-2.0-or-later
#include "tests/support/tpm_cut_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <list>
#include <mutex>
#include <thread>

namespace tpmma::testing {
namespace {

// A TPM command header: tag (2), commandSize (4), commandCode (4), big-endian.
constexpr size_t kHeader = 10;
constexpr uint32_t kMaxCommand = 1 << 20;

uint32_t Be32(const std::string& b, size_t at) {
  auto u = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[at + i])); };
  return u(0) << 24 | u(1) << 16 | u(2) << 8 | u(3);
}

int Listen(int port, int* bound) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof a;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd, 16) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    return -1;
  }
  *bound = ntohs(a.sin_port);
  return fd;
}

int Connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

bool WriteAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// One caller connection and the proxy's connection to swtpm for it.
struct Link {
  int client = -1, server = -1;
  bool data = true;     // the TPM command channel (else control: forwarded as is)
  std::string pending;  // client bytes not yet a whole command
  bool kill_on_response = false;
  ~Link() {
    if (client >= 0) ::close(client);
    if (server >= 0) ::close(server);
  }
};

}  // namespace

struct TpmCutProxy::Impl {
  int listen_data = -1, listen_ctrl = -1, port = 0;
  int wake[2] = {-1, -1};
  std::function<void()> kill;
  std::thread thread;
  mutable std::mutex mu;  // guards the fields below
  int target = 0;
  bool armed = false, fired = false;
  Cut cut;
  int seen_since_arm = 0;
  std::vector<uint32_t> commands;
  std::list<Link> links;  // the loop thread's only

  ~Impl() {
    if (thread.joinable()) {
      char c = 0;
      (void)!::write(wake[1], &c, 1);
      thread.join();
    }
    for (int fd : {listen_data, listen_ctrl, wake[0], wake[1]})
      if (fd >= 0) ::close(fd);
  }

  // Marked fired first: the caller sees its connection drop and may ask at once.
  void Fire() {
    {
      std::lock_guard<std::mutex> l(mu);
      fired = true;
    }
    kill();
    links.clear();
  }

  // What to do with one whole command: forward it, cut before it, or forward and cut on
  // its response.
  enum class Verdict { kForward, kCutNow, kCutOnResponse };
  Verdict Judge(uint32_t code) {
    std::lock_guard<std::mutex> l(mu);
    const bool hit = armed && (cut.at_code != 0 ? code == cut.at_code : seen_since_arm == cut.skip);
    if (armed) ++seen_since_arm;
    if (!hit) {
      commands.push_back(code);
      return Verdict::kForward;
    }
    armed = false;
    if (!cut.after_execute) return Verdict::kCutNow;
    commands.push_back(code);
    return Verdict::kCutOnResponse;
  }

  // Client bytes on the command channel, forwarded one whole command at a time. False: drop
  // the link (or everything was cut).
  bool FromClient(Link& link, const char* p, size_t n, bool* cut_all) {
    if (!link.data) return WriteAll(link.server, p, n);
    link.pending.append(p, n);
    while (link.pending.size() >= kHeader) {
      const uint32_t size = Be32(link.pending, 2);
      if (size < kHeader || size > kMaxCommand) {  // not a TPM command: pass it on unjudged
        bool ok = WriteAll(link.server, link.pending.data(), link.pending.size());
        link.pending.clear();
        return ok;
      }
      if (link.pending.size() < size) break;
      switch (Judge(Be32(link.pending, 6))) {
        case Verdict::kCutNow:
          *cut_all = true;
          return false;
        case Verdict::kCutOnResponse:
          link.kill_on_response = true;
          [[fallthrough]];
        case Verdict::kForward:
          if (!WriteAll(link.server, link.pending.data(), size)) return false;
          link.pending.erase(0, size);
      }
    }
    return true;
  }

  void Accept(int listener, bool data) {
    int c = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    int t;
    {
      std::lock_guard<std::mutex> l(mu);
      t = target;
    }
    int s = Connect(data ? t : t + 1);
    if (s < 0) {
      ::close(c);
      return;
    }
    Link& link = links.emplace_back();
    link.client = c;
    link.server = s;
    link.data = data;
  }

  // Reads what one side of `link` has; false when the link is done.
  bool Pump(Link& link, bool from_client, bool* cut_all) {
    char buf[16384];
    ssize_t n = ::recv(from_client ? link.client : link.server, buf, sizeof buf, 0);
    if (n <= 0) return false;
    if (from_client) return FromClient(link, buf, static_cast<size_t>(n), cut_all);
    if (link.kill_on_response) {
      *cut_all = true;
      return false;
    }
    return WriteAll(link.client, buf, static_cast<size_t>(n));
  }

  void Loop() {
    for (;;) {
      std::vector<pollfd> fds = {
          {wake[0], POLLIN, 0}, {listen_data, POLLIN, 0}, {listen_ctrl, POLLIN, 0}};
      for (const Link& l : links) {
        fds.push_back({l.client, POLLIN, 0});
        fds.push_back({l.server, POLLIN, 0});
      }
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;
      if (fds[0].revents != 0) return;
      bool cut_all = false;
      size_t i = 3;
      for (auto it = links.begin(); it != links.end() && !cut_all; i += 2) {
        bool keep = true;
        if (fds[i].revents != 0) keep = Pump(*it, true, &cut_all);
        if (keep && !cut_all && fds[i + 1].revents != 0) keep = Pump(*it, false, &cut_all);
        // A cut closes every link in Fire(), after it is marked fired: closing this one here
        // would let the client see its connection drop, and ask fired(), before that.
        if (cut_all) break;
        it = keep ? std::next(it) : links.erase(it);
      }
      if (cut_all) {
        Fire();
        continue;  // the listeners' events are stale now
      }
      if (fds[1].revents != 0) Accept(listen_data, true);
      if (fds[2].revents != 0) Accept(listen_ctrl, false);
    }
  }
};

TpmCutProxy::TpmCutProxy(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
TpmCutProxy::~TpmCutProxy() = default;

std::unique_ptr<TpmCutProxy> TpmCutProxy::Start(int target_port, std::function<void()> kill,
                                                std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->kill = std::move(kill);
  impl->target = target_port;
  for (int attempt = 0; attempt < 50 && impl->listen_ctrl < 0; ++attempt) {
    if (impl->listen_data >= 0) ::close(impl->listen_data);
    impl->listen_data = Listen(0, &impl->port);
    int ctrl_port = 0;
    if (impl->listen_data >= 0 && impl->port < 65535)
      impl->listen_ctrl = Listen(impl->port + 1, &ctrl_port);
  }
  if (impl->listen_ctrl < 0 || ::pipe2(impl->wake, O_CLOEXEC) != 0) {
    if (error) *error = "no two consecutive free loopback ports for the TPM proxy";
    return nullptr;
  }
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] { raw->Loop(); });
  return std::unique_ptr<TpmCutProxy>(new TpmCutProxy(std::move(impl)));
}

std::string TpmCutProxy::tcti() const {
  return "swtpm:host=127.0.0.1,port=" + std::to_string(impl_->port);
}

void TpmCutProxy::Arm(Cut cut) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->cut = cut;
  impl_->armed = true;
  impl_->fired = false;
  impl_->seen_since_arm = 0;
}

void TpmCutProxy::Retarget(int target_port) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->target = target_port;
}

bool TpmCutProxy::fired() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->fired;
}

std::vector<uint32_t> TpmCutProxy::commands() const {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->commands;
}

}  // namespace tpmma::testing

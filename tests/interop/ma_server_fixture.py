# SPDX-License-Identifier: GPL-2.0-or-later
"""Starts a real ma-server from a fresh `ma-admin init` state on a free loopback port."""
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time


class MaServer:
    def __init__(self, ma_admin, ma_server, extra_config=None):
        self.dir = tempfile.mkdtemp(prefix='tpmma-interop-')
        self.state = state = os.path.join(self.dir, 'ma')
        self.ma_server = ma_server
        subprocess.run([ma_admin, 'init', '--dir', state, '--listen', '127.0.0.1:0'],
                       check=True, capture_output=True)
        self.config = os.path.join(state, 'config.toml')
        self.ca = os.path.join(state, 'ca', 'ca-cert.pem')
        self.ma_cert = os.path.join(state, 'ma', 'ma-cert.pem')
        self.escrow_cert = os.path.join(state, 'escrow', 'escrow-cert.pem')
        if extra_config:
            text = open(self.config).read()
            for section, key, value in extra_config:
                text = re.sub(rf'(\[{section}\][^\[]*?){key} = [^\n]*', rf'\g<1>{key} = {value}',
                              text, flags=re.S)
            open(self.config, 'w').write(text)
        self.starts = 0
        self._start()

    def _start(self):
        self.starts += 1
        self.log_path = os.path.join(self.dir, f'ma-server.{self.starts}.log')
        self.log = open(self.log_path, 'w+')
        self.proc = subprocess.Popen([self.ma_server, '--config', self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.url = self._wait_listening()

    def restart(self):
        """Stops the server (SIGTERM) and starts it again on the same state: a new port."""
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self.log.close()
        assert rc == 0, f'ma-server exited with {rc} after SIGTERM'
        self._start()

    def _wait_listening(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path) as f:
                # The port counts only with the character after it: the line may be
                # half written when it is read.
                m = re.search(r'listening on (https://127\.0\.0\.1:\d+)\D', f.read())
            if m:
                return m.group(1) + '/'
            if self.proc.poll() is not None:
                raise RuntimeError(f'ma-server exited with {self.proc.returncode}; see {self.log_path}')
            time.sleep(0.05)  # polling a condition (the log line), not a fixed wait
        raise RuntimeError(f'ma-server did not start within {timeout} s; see {self.log_path}')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            rc = self.proc.wait(timeout=30)
        else:
            rc = self.proc.returncode
        self.log.close()
        if not os.environ.get('TPMMA_KEEP_TEST_DIRS'):
            shutil.rmtree(self.dir, ignore_errors=True)
        return rc

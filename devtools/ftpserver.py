"""A small pyftpdlib server for the demo and tests.

Each user has a login directory inside one shared root, like a Unix FTP server: absolute paths
start at the root, relative ones at the login directory (as in the seed docs' `/home/alex`).

Options reproduce what real servers do to a client:
  --tls explicit|implicit      FTPS (pyftpdlib's TLS_FTPHandler, pyOpenSSL), TLS required on the
                               control and the data connections; implicit = TLS from the first byte
  --refuse-rename-over-existing  RNTO onto an existing file fails, as on IIS and some NAS
  --read-limit BYTES           upload speed limit per data connection (a slow link)
  --no-epsv --masquerade-address IP   a server behind NAT: only PASV, answering an inside address
  --idle-timeout SECONDS       close sessions idle that long (default 300)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.exceptions import _FileReadWriteError
from pyftpdlib.handlers import FTPHandler, ThrottledDTPHandler
from pyftpdlib.servers import FTPServer


def handler_class(args: argparse.Namespace, homes: dict[str, str]) -> type[FTPHandler]:
    base: type[FTPHandler] = FTPHandler
    if args.tls != "none":
        from pyftpdlib.handlers import TLS_FTPHandler

        base = TLS_FTPHandler

    class Handler(base):  # type: ignore[valid-type,misc,unused-ignore]
        def on_login(self, username: str) -> None:
            self.fs.cwd = homes.get(username, "/")

        def ftp_RNTO(self, path: str) -> Any:
            if args.refuse_rename_over_existing and self.fs.lexists(path):
                self._rnfr = None
                self.respond("550 Cannot create a file when that file already exists.")
                return None
            return super().ftp_RNTO(path)

        def ftp_EPSV(self, line: str) -> Any:
            if args.no_epsv:
                self.respond("502 Command not implemented.")
                return None
            return super().ftp_EPSV(line)

    if args.tls != "none":
        Handler.certfile = args.cert
        Handler.keyfile = args.key
        Handler.tls_control_required = True
        Handler.tls_data_required = True

    class DTP(ThrottledDTPHandler if args.read_limit else Handler.dtp_handler):  # type: ignore[misc]
        read_limit = args.read_limit or None

        def handle_error(self) -> None:
            # pyftpdlib 2.2 means to answer a failed file write with its reason (`426 No space left on
            # device; transfer aborted.`) but formats the errno number instead (`426 28; …`).
            error = sys.exc_info()[1]
            cause = error.__cause__ if error is not None else None
            if isinstance(error, _FileReadWriteError) and isinstance(cause, OSError) and cause.errno:
                self._abort(cause)
                self.close()
                return
            super().handle_error()

        def _abort(self, error: OSError) -> None:
            """Answer the transfer with 426 and the reason the file write failed."""
            reason = os.strerror(error.errno) if error.errno else str(error)
            self._resp = (f"426 {reason}; transfer aborted.", logging.getLogger().warning)

        def close(self) -> None:
            # pyftpdlib closes the file after the data connection and lets an error escape: the last
            # buffered bytes failing to reach a full disk (ENOSPC on flush) would stop the whole server.
            # Close it first and answer 426 instead, as a server whose final write failed does.
            file = self.file_obj
            if not self._closed and file is not None and not file.closed:
                try:
                    file.close()
                except OSError as exc:
                    self.transfer_finished = False
                    self._abort(exc)
            super().close()

    Handler.dtp_handler = DTP
    if args.masquerade_address:
        Handler.masquerade_address = args.masquerade_address
    Handler.passive_ports = None
    Handler.timeout = args.idle_timeout
    if args.tls == "implicit":

        class Implicit(Handler):  # type: ignore[valid-type,misc,unused-ignore]
            def __init__(self, conn: Any, server: Any, ioloop: Any = None) -> None:
                super().__init__(conn, server, ioloop)
                if self.connected:
                    self.secure_connection(self.ssl_context)  # TLS before the banner, as on port 990

        return Implicit
    return Handler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--user", action="append", default=[], help="name:password:home:perm")
    parser.add_argument("--tls", choices=("none", "explicit", "implicit"), default="none")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--refuse-rename-over-existing", action="store_true")
    parser.add_argument("--read-limit", type=int, default=0)
    parser.add_argument("--no-epsv", action="store_true")
    parser.add_argument("--masquerade-address")
    parser.add_argument("--idle-timeout", type=int, default=300, help="seconds before an idle session is closed")
    args = parser.parse_args()

    authorizer = DummyAuthorizer()
    homes: dict[str, str] = {}
    for spec in args.user:
        name, password, home, perm = spec.split(":", 3)
        authorizer.add_user(name, password, args.root, perm=perm)
        homes[name] = home

    handler = handler_class(args, homes)
    handler.authorizer = authorizer
    logging.basicConfig(level=logging.WARNING)
    server = FTPServer(("127.0.0.1", args.port), handler)
    server.serve_forever()


if __name__ == "__main__":
    main()

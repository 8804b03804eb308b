"""``fkp-serve``: the web page and the JSON API on a local server (``serve.app``).

    fkp-serve                       # http://127.0.0.1:8000/ : the page; /docs: the API
    fkp-serve --host 0.0.0.0 --port 8080     # reachable from other machines (no login!)
"""
from __future__ import annotations

import argparse
import errno
import socket
import sys

import uvicorn

from facial_keypoints import __version__
from facial_keypoints.cli import add_pipeline_options, int_at_least
from facial_keypoints.detection.base import DetectorWeightsError
from facial_keypoints.keypoints.runtime import ModelLoadError
from facial_keypoints.serve.app import MAX_MEGAPIXELS, MAX_UPLOAD_BYTES, create_app

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


def build_parser(prog="fkp-serve"):
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve a web page to find faces and their 68 keypoints in a photo or a "
                    "live webcam, and a JSON API (POST /api/faces; documents at /docs).",
        epilog="Listens on this machine only unless --host says otherwise. Ctrl-C stops it.")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: %(default)s, this machine only; "
                        "0.0.0.0: every network interface, with no login)")
    p.add_argument("--port", type=tcp_port, default=8000,
                   help="port, 0 to 65535 (default: %(default)s; 0: any free port, printed at "
                        "start)")
    add_pipeline_options(p, detector=False)   # the detector and mark-up: per request
    p.add_argument("--max-upload-mb", type=int_at_least(1), default=MAX_UPLOAD_BYTES // 2**20,
                   metavar="MB", help="largest image a request (or a camera frame) may send, in "
                                      "MiB; larger ones get status 413 (default: %(default)s)")
    p.add_argument("--max-megapixels", type=int_at_least(1), default=MAX_MEGAPIXELS,
                   metavar="MP", help="largest picture, decoded, in megapixels; larger ones get "
                                      "status 413 before they are decoded (default: "
                                      "%(default)s; Pillow refuses over 179 whatever this says)")
    p.add_argument("--quiet", action="store_true", help="no log line per request")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def tcp_port(text) -> int:
    """An argparse type: a TCP port, 0 to 65535."""
    value = int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be at most 65535, got {value}")
    return value


def listening_socket(host, port) -> socket.socket:
    """A socket bound to (host, port), or ``OSError`` with a one-line reason."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise OSError(f"port {port} on {host} is in use: choose another with --port "
                          f"(0: any free port)") from None
        raise OSError(f"cannot listen on {host}:{port} ({e.strerror or e})") from None
    return sock


def main(argv=None, prog="fkp-serve"):
    args = build_parser(prog).parse_args(argv)
    try:
        app = create_app(args.model, max_upload_bytes=args.max_upload_mb * 2**20,
                         max_megapixels=args.max_megapixels)
        sock = listening_socket(args.host, args.port)
    except (ModelLoadError, DetectorWeightsError, OSError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"{prog}: serving http://{shown}:{port}/ (API documents: /docs); Ctrl-C stops it",
          file=sys.stderr, flush=True)
    if args.host not in LOCAL_HOSTS:
        print(f"{prog}: listening on {args.host}: anyone who can reach this machine can use it "
              f"(there is no login)", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning" if args.quiet else "info",
                            access_log=not args.quiet,
                            ws_max_size=args.max_upload_mb * 2**20)   # camera frames too
    uvicorn.Server(config).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())

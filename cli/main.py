"""The `shoplens` command line. User mistakes print one clear line on stderr and exit non-zero.

With a ShopLens server running for this home (or `--server URL` / `SHOPLENS_SERVER_URL`), the
commands that touch the stores go through its API (`cli.remote`); otherwise they open the stores
in this process (`cli.local`). This module imports neither, nor any model, until it knows which.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cli.common import EXIT_FAILURE, EXIT_USER_ERROR, UserError
from services.errors import ShopLensError

__all__ = ["EXIT_USER_ERROR", "UserError", "build_parser", "main"]

FORCE_PRUNE_HELP = (
    "prune even when some rows could not be read and their SKUs are unknown (implies --prune): "
    "products on those rows are removed too"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="shoplens", description="Photo-to-product search for online shops.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument(
        "--server",
        metavar="URL",
        help="a running ShopLens server (default: SHOPLENS_SERVER_URL, else the one running for this home)",
    )
    parser.add_argument("--local", action="store_true", help="open the stores in this process even if a server runs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "ingest",
        help="load or refresh a catalog: CSV/JSONL, a Google Merchant Center feed, a Shopify or WooCommerce export "
        "(a path or an http(s) URL)",
    )
    p.add_argument("catalog")
    p.add_argument("--prune", action="store_true", help="remove products that are not in the catalog")
    p.add_argument("--force-prune", action="store_true", help=FORCE_PRUNE_HELP)
    p.add_argument("--wait", action="store_true", help="wait for another ingest run to finish instead of exiting")
    p.add_argument("--report", type=Path, help="write the problems found to this .csv or .json file")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--images", type=Path, help="with a remote server: a ZIP of the catalog's photos to upload with it")

    p = sub.add_parser("schedule", help="re-ingest a catalog path or URL on an interval or a cron schedule")
    p.add_argument("catalog")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--every", help="interval, e.g. 30m, 1h, 2h30m")
    when.add_argument("--cron", help='crontab expression, e.g. "0 * * * *" (UTC)')
    p.add_argument("--prune", action="store_true")
    p.add_argument("--force-prune", action="store_true", help=FORCE_PRUNE_HELP)
    p.add_argument("--max-runs", type=int, help="stop after this many runs")

    p = sub.add_parser("runs", help="ingest run history")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("reconcile", help="find and repair drift between SQL and Qdrant")
    p.add_argument("--dry-run", action="store_true", help="only report")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("search", help="search by photo, text or both")
    p.add_argument("--image", type=Path, help="query photo")
    p.add_argument("--text", help="query text")
    p.add_argument("--weight", type=float, default=0.5, help="text share when giving both (0-1, default 0.5)")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--category", action="append", default=[], help="repeatable")
    p.add_argument("--brand", action="append", default=[], help="repeatable")
    p.add_argument("--min-price", type=float)
    p.add_argument("--max-price", type=float)
    p.add_argument("--in-stock", action="store_true")
    p.add_argument("--min-score", type=float)
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("stats", help="product, image and vector counts in SQL and Qdrant")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("reindex", help="rebuild every vector from SQL and the media folder")

    p = sub.add_parser(
        "audit", help="near-duplicate listings, category suggestions and mismatches, from the stored vectors"
    )
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--report", type=Path, help="write the findings to this CSV file")
    p.add_argument("--fresh", action="store_true", help="audit anew even if the server holds a current audit")
    accept = p.add_mutually_exclusive_group()
    accept.add_argument(
        "--accept-above", type=float, metavar="CONF", help="accept every suggestion at this confidence or above"
    )
    accept.add_argument("--accept", action="append", metavar="SKU", help="accept this product's suggestion (repeat)")

    p = sub.add_parser("eval", help="recall@1/5/10 and MRR of labelled queries (image or text → expected_sku)")
    p.add_argument(
        "queries",
        type=Path,
        help="CSV or JSONL with image (relative to the file) or text, and expected_sku (empty: nothing should match)",
    )
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--report", type=Path, help="write the misses to this CSV file")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("import-vendure", help="convert the Vendure demo catalog to a ShopLens CSV")
    p.add_argument("assets", type=Path, help="the folder holding products.csv and images/")
    p.add_argument("--out", type=Path, required=True)

    p = sub.add_parser(
        "demo",
        help="load the sample shop (downloaded once from the npm registry) and start the server and the storefront",
    )
    _listen_args(p)
    p.add_argument("--no-browser", action="store_true", help="do not open a browser window")
    p.add_argument("--registry", help="npm registry URL (default: NPM_CONFIG_REGISTRY, else the public npm registry)")

    p = sub.add_parser(
        "serve", help="start the ShopLens server (HTTP API, job worker, schedule) and the storefront pages"
    )
    _listen_args(p)
    p.add_argument("--no-pages", action="store_true", help="the API alone, without the Streamlit pages")
    p.add_argument(
        "--schedule",
        metavar="CATALOG",
        help="re-ingest this catalog path or URL on a schedule (with --every or --cron)",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument("--every", help="interval, e.g. 30m, 1h, 2h30m")
    when.add_argument("--cron", help='crontab expression, e.g. "0 * * * *" (UTC)')
    p.add_argument("--prune", action="store_true", help="scheduled runs remove products that left the catalog")
    p.add_argument("--force-prune", action="store_true", help=FORCE_PRUNE_HELP)

    p = sub.add_parser("pages", help="only the storefront pages, as a client of a running server (SHOPLENS_SERVER_URL)")
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--address", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")

    p = sub.add_parser("migrate", help="bring the database schema up to date (every command does this on start)")
    return parser


def _listen_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, default=8501, help="the storefront pages (default 8501)")
    p.add_argument("--api-port", type=int, help="the HTTP API (default 8000, or SHOPLENS_API_PORT)")
    p.add_argument(
        "--address", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0 for every interface)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("SHOPLENS_DEBUG") == "1"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # psycopg warns as it cleans up after a dropped connection; the run reports the drop in its own words
    for noisy in ("httpx", "httpcore", "urllib3", "huggingface_hub", "transformers", "root", "psycopg"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.ERROR)
    # third-party warnings (torch, transformers, open_clip) become log records, shown with --debug only
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").setLevel(logging.WARNING if debug else logging.ERROR)
    if not debug:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # read when transformers is imported
    try:
        return _dispatch(args)
    except ShopLensError as exc:
        if debug:
            raise
        print(f"shoplens: error: {exc.message}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("shoplens: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            raise
        text = " ".join(str(exc).split()) or exc.__class__.__name__
        print(f"shoplens: error: {exc.__class__.__name__}: {text} (run with --debug for details)", file=sys.stderr)
        return EXIT_FAILURE


def _dispatch(args: argparse.Namespace) -> int:
    from services.settings import Settings

    settings = Settings()
    if getattr(args, "api_port", "unset") is None:
        args.api_port = settings.api_port
    if args.command in _client_commands() and not args.local:
        target = _server(args, settings)
        if target is not None:
            return _remote(args, *target)
    from cli import local
    from services.context import ShopLens

    command = getattr(local, "cmd_" + args.command.replace("-", "_"))
    app = ShopLens(settings)
    try:
        return command(app, args)
    finally:
        app.close()


def _client_commands() -> frozenset[str]:
    from cli.remote import CLIENT_COMMANDS

    return CLIENT_COMMANDS


def _server(args: argparse.Namespace, settings) -> tuple[str, str | None, bool] | None:
    """(url, credential, on this machine) of the server to use, or None to work locally."""
    from server.client import find_server

    if args.server:
        token = settings.admin_password.get_secret_value() if settings.admin_password else None
        return args.server, token, _is_loopback(args.server)
    found = find_server(settings)
    if found is None:
        return None
    url, token = found
    return url, token, settings.server_url is None or _is_loopback(url)


def _remote(args: argparse.Namespace, url: str, token: str | None, on_this_machine: bool) -> int:
    from cli import remote
    from server.client import ShopLensClient

    with ShopLensClient(url, token) as client:
        command = getattr(remote, f"cmd_{args.command}")
        if args.command in ("ingest", "schedule"):
            return command(client, args, on_this_machine)
        return command(client, args)


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


if __name__ == "__main__":
    sys.exit(main())

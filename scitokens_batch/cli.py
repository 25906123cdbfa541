"""The ``scitokens-batch`` command line (thin: parse arguments, call the library, print).

Exit codes (:data:`EXIT_CODES`): 0 success (token accepted, every expectation held), 1 a verdict
or expectation failed, 2 bad input or environment (the message names the file, option or key
path), 70 our bug (traceback in --out/crash.txt or a named temporary file), 130 interrupted.
:func:`main` is the one place that turns an exception into one of them: no traceback is ever
shown, and no token or key is printed unless the user asks for exactly that.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import json
import math
import os
import sys
import tempfile
import textwrap
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import _files
from ._version import __version__
from .errors import KeyFileError, LocalInputError
from .metrics import ERROR_KINDS, EVENT_OUTPUTS, summary_table
from .scenario import (
    DEFAULT_EVENT_LIMIT,
    EVENTS_PER_SECOND,
    RunResult,
    Scenario,
    check_scenario,
    estimate_events,
    load_scenario,
    run_virtual,
)
from .tokens import (
    MAX_LIFETIME,
    MAX_TIME,
    MIN_LIFETIME,
    Algorithm,
    Discovered,
    DiscoveryError,
    Operation,
    Profile,
    Rejection,
    SigningKey,
    VerifiedToken,
    build_claims,
    discover,
    encode,
    is_b64token,
    jwks_document,
    parse_condor_creds,
    parse_jwks,
    peek,
    short_hash,
    verifier_for,
)

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE: our bug, never confused with a failed check
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

#: The exit-code table every command's help shows.
EXIT_CODES = """exit codes:
  0    success (every expectation held, token accepted)
  1    a check or verdict failed (an expectation, a rejected token, a failed live run)
  2    bad input or environment (file, option, key path; an --out that cannot be written)
  70   internal error: a bug; the traceback is written to --out/crash.txt or a temp file
  130  interrupted (Ctrl-C)"""


class _Usage(LocalInputError):
    """Bad command-line input detected after argparse."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's own exit code is 2 as well
        self.print_usage(sys.stderr)
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _wall_now() -> float:
    # The command line is the one place that reads the wall clock for token work: it verifies and
    # mints real tokens for people. Everything below takes `now` as a parameter.
    return time.time()  # noqa: TID251


# -- reading tokens and keys ---------------------------------------------------------------


def _read_token_arg(arg: str) -> str:
    """A TOKEN argument: ``-`` for stdin, a path to a file (raw or HTCondor JSON), or the token."""
    if arg == "-":
        data = sys.stdin.buffer.read(1 << 20)
        source = "stdin"
    elif is_b64token(arg) and arg.count(".") == 2 and not os.path.exists(arg):
        return arg
    else:
        try:
            data = Path(arg).read_bytes()
        except FileNotFoundError:
            raise _Usage(f"TOKEN {arg!r}: neither a token nor an existing file") from None
        except OSError as exc:
            raise _Usage(f"TOKEN file {arg}: cannot read ({exc.strerror})") from None
        source = arg
    try:
        return parse_condor_creds(data)
    except LocalInputError as exc:
        raise _Usage(f"TOKEN from {source}: {exc}") from None


def _load_signing_key(path: str) -> SigningKey:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"--key {path}: cannot read ({exc.strerror})") from None
    key = SigningKey.from_pem(pem, source=f"--key {path}")
    # The kid comes from the JWKS written beside the key (keygen writes both).
    jwks_path = Path(path).with_name("jwks.json")
    try:
        published = parse_jwks(json.loads(jwks_path.read_text()), source=str(jwks_path))
    except FileNotFoundError:
        raise KeyFileError(
            f"--key {path}: expected {jwks_path} beside it (written by 'token keygen') for the kid"
        ) from None
    except (OSError, ValueError, RecursionError) as exc:
        raise KeyFileError(f"{jwks_path}: not a JWKS JSON file ({exc})") from None
    for pub in published:
        if pub.fingerprint == key.public.fingerprint:
            return SigningKey.from_key(key.key, kid=pub.kid)
    raise KeyFileError(f"{jwks_path}: holds no public key matching --key {path}")


def _load_jwks(path: str) -> Any:
    try:
        return parse_jwks(json.loads(Path(path).read_text()), source=f"--jwks {path}")
    except FileNotFoundError:
        raise KeyFileError(f"--jwks {path}: no such file") from None
    except (OSError, ValueError, RecursionError) as exc:
        if isinstance(exc, KeyFileError):
            raise
        raise KeyFileError(f"--jwks {path}: not a JWKS JSON file ({exc})") from None


# -- output ---------------------------------------------------------------------------


def _console() -> Console:
    return Console(highlight=False, soft_wrap=True)


def _print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _iso(ts: Any) -> str:
    # An unverified token may claim any number (inf, 1e300): shown as "?" rather than crashing.
    if isinstance(ts, int | float) and not isinstance(ts, bool) and 0 <= ts < MAX_TIME:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return "?"


def _claims_table(title: str, header: dict[str, Any], claims: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("part")
    table.add_column("name")
    table.add_column("value", overflow="fold")
    for k, v in header.items():
        table.add_row("header", k, json.dumps(v))
    for k, v in claims.items():
        shown = json.dumps(v)
        if k in ("iat", "nbf", "exp"):
            shown += f"  ({_iso(v)})"
        table.add_row("claims", k, shown)
    return table


# -- token subcommands ----------------------------------------------------------------


def _cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _Usage(f"--out {out}: cannot create directory ({exc.strerror})") from None
    key = SigningKey.generate(Algorithm(args.alg), kid=args.kid)
    _files.write_private(out / "private.pem", key.private_pem())
    _files.write_public(out / "public.pem", key.public.public_pem())
    _files.write_public(out / "jwks.json", json.dumps(jwks_document([key.public]), indent=2) + "\n")
    if args.json:
        _print_json({"kid": key.kid, "alg": key.alg.value, "dir": str(out)})
    else:
        _console().print(
            f"wrote {out}/private.pem (0600), public.pem, jwks.json"
            f"  kid={key.kid} alg={key.alg.value}"
        )
    return EXIT_OK


def _cmd_mint(args: argparse.Namespace) -> int:
    key = _load_signing_key(args.key)
    now = _wall_now()
    claims = build_claims(
        profile=Profile(args.profile),
        issuer=args.issuer,
        subject=args.sub,
        audience=args.aud,
        scopes=args.scope,
        issued_at=now,
        lifetime=args.lifetime,
        jti=str(uuid.uuid4()),
        nbf_backdate=args.nbf_backdate,
        groups=args.group or (),
    )
    token = encode(claims, key)
    if args.json:
        _print_json({"token": token, "jti": claims["jti"], "exp": claims["exp"], "kid": key.kid})
    else:
        sys.stdout.write(token + "\n")
    return EXIT_OK


def _cmd_inspect(args: argparse.Namespace) -> int:
    token = _read_token_arg(args.token)
    header, claims = peek(token)
    if args.json:
        _print_json({"header": header, "claims": claims, "sha256_12": short_hash(token)})
    else:
        _console().print(_claims_table(f"token {short_hash(token)} (NOT verified)", header, claims))
    return EXIT_OK


def _cmd_verify(args: argparse.Namespace) -> int:
    token = _read_token_arg(args.token)
    keys = _load_jwks(args.jwks)
    if (args.op is None) != (args.path is None):
        raise _Usage("--op and --path go together")
    now = _wall_now() if args.now is None else args.now
    verifier = verifier_for(
        args.issuer, args.aud, keys, now=now, base_path=args.base_path, leeway=args.leeway
    )
    if args.op is None:
        verdict = verifier.check(token, now=now)
    else:
        verdict = verifier.authorize(token, now=now, op=_OPS[args.op], path=args.path)
    if isinstance(verdict, VerifiedToken):
        if args.json:
            _print_json(
                {
                    "accepted": True,
                    "jti": verdict.jti,
                    "exp": verdict.exp,
                    "scopes": [str(s) for s in verdict.scopes],
                }
            )
        else:
            sys.stdout.write("accepted\n")
        return EXIT_OK
    assert isinstance(verdict, Rejection)  # keys are preloaded: NeedKeys cannot happen
    if args.json:
        _print_json(
            {
                "accepted": False,
                "reason": verdict.reason.value,
                "detail": verdict.detail,
                "status": verdict.status,
            }
        )
    else:
        sys.stdout.write(f"rejected: {verdict.reason.value}: {verdict.detail}\n")
    return EXIT_FAILED


_OPS = {
    "read": Operation.READ,
    "stat": Operation.STAT,
    "create": Operation.CREATE,
    "mkdir": Operation.MKDIR,
    "modify": Operation.MODIFY,
    "write": Operation.MODIFY,  # a write that may replace an existing file needs modify rights
    "stage": Operation.STAGE,
}


def _cmd_discover(args: argparse.Namespace) -> int:
    found = discover(
        _files.os_environ_snapshot(),
        euid=_files.current_euid(),
        read_file=_files.read_file,
        purpose=args.purpose,
    )
    if found is None:
        msg = {
            "found": False,
            "detail": "no token: BEARER_TOKEN, BEARER_TOKEN_FILE, "
            "$XDG_RUNTIME_DIR/bt_u<euid> and /tmp/bt_u<euid> all empty or absent",
        }
        if args.json:
            _print_json(msg)
        else:
            sys.stdout.write(f"no token found ({msg['detail']})\n")
        return EXIT_FAILED
    if isinstance(found, DiscoveryError):
        if args.json:
            _print_json(
                {
                    "found": False,
                    "source": found.source.value,
                    "path": found.path,
                    "detail": found.detail,
                }
            )
        else:
            where = f" ({found.path})" if found.path else ""
            sys.stdout.write(f"discovery stopped at {found.source.value}{where}: {found.detail}\n")
        return EXIT_FAILED
    assert isinstance(found, Discovered)
    out: dict[str, Any] = {
        "found": True,
        "source": found.source.value,
        "path": found.path,
        "sha256_12": short_hash(found.token),
    }
    if args.show:
        out["token"] = found.token
    if args.json:
        _print_json(out)
    else:
        where = f" {found.path}" if found.path else ""
        sys.stdout.write(f"found in {found.source.value}{where} (sha256 {out['sha256_12']})\n")
        if args.show:
            sys.stdout.write(found.token + "\n")
    return EXIT_OK


# -- scenarios ------------------------------------------------------------------------


def _load(args: argparse.Namespace) -> Scenario:
    return load_scenario(args.scenario, overrides=args.set or ())


def _cmd_check(args: argparse.Namespace) -> int:
    spec = _load(args)
    check_scenario(spec, source=args.scenario)
    jobs = sum(w.jobs for w in spec.workloads)
    hosts = sum(group.count for group in spec.execute_hosts)  # counted, never listed
    rules = ""
    if spec.rules:  # Rucio -> FTS -> storage: said only when there is some
        files = sum(spec.dataset(rule.dataset).files for rule in spec.rules)
        rules = f"{len(spec.rules)} rule(s) ({files} file(s)), "
    sys.stdout.write(
        f"{args.scenario}: ok — scenario {spec.meta.name!r}, {len(spec.issuers)} issuer(s), "
        f"{hosts} execute host(s), {len(spec.data_servers)} data server(s), {jobs} job(s), "
        f"{rules}{len(spec.faults)} fault(s), {len(spec.expect.checks)} check(s), "
        f"~{estimate_events(spec):,} events estimated\n"
    )
    return EXIT_OK


def _refuse_too_big(spec: Scenario, *, force: bool) -> None:
    """Refuse a run estimated beyond DEFAULT_EVENT_LIMIT events, unless forced."""
    estimate = estimate_events(spec)
    if estimate > DEFAULT_EVENT_LIMIT and not force:
        minutes = estimate / EVENTS_PER_SECOND / 60
        raise _Usage(
            f"this run is estimated at {estimate:,} events (about {minutes:,.0f} min): "
            f"expected at most {DEFAULT_EVENT_LIMIT:,}; reduce jobs, hosts, repeats or raise "
            "the intervals, or pass --force to run it anyway"
        )


def _prepare_out(out: Path) -> None:
    """--out is a directory we can write, or a place we can create one: checked up front."""
    # Nothing is created here: a run that fails leaves no trace (run_virtual creates it).
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise _Usage(f"--out {out}: expected a directory, received an existing file {existing}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise _Usage(f"--out {out}: expected a writable directory, {existing} is not writable")


def _with_progress(
    label: str,
    total: float,
    shown: Callable[[float, float], str],
    run: Callable[[Callable[[float, float], None] | None], RunResult],
) -> RunResult:
    """Call ``run`` with a progress callback drawing a bar on a terminal (None otherwise)."""
    console = _console()
    if not console.is_terminal:
        return run(_progress_lines(label, shown))
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[t]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total, t="")

        def progress(done: float, total: float) -> None:
            bar.update(task, completed=done, t=shown(done, total))

        return run(progress)


#: Seconds between progress lines when stderr is not a terminal (CI logs, nohup, pipes).
PROGRESS_EVERY = 5.0


def _progress_lines(
    label: str, shown: Callable[[float, float], str], *, every: float = PROGRESS_EVERY
) -> Callable[[float, float], None]:
    """A progress callback writing one line to stderr at most every ``every`` wall seconds."""
    start = time.monotonic()
    last = [start]

    def progress(done: float, total: float) -> None:
        now = time.monotonic()
        if now - last[0] >= every:
            last[0] = now
            percent = 100.0 * done / total if total else 100.0
            _say(f"{label}: {shown(done, total)} ({percent:.0f}%), {now - start:.0f} s")

    return progress


def _report(result: RunResult, outputs: str | None) -> int:
    """Print the summary table, each failed check, and where the outputs went."""
    _console().print(summary_table(result.summary, wall_seconds=result.run.get("wall_seconds")))
    for check in result.checks:
        if not check.passed:
            why = f" ({check.error})" if check.error else f" (actual {check.actual!r})"
            sys.stdout.write(f"FAILED: {check.line}{why}\n")
    if outputs is not None:
        sys.stdout.write(outputs + "\n")
    return EXIT_OK if result.passed else EXIT_FAILED


def _cmd_run(args: argparse.Namespace) -> int:
    spec = _load(args)
    events = getattr(args, "events", "all")  # `demo` runs this without the option
    out = Path(args.out) if args.out else None
    if out is not None:
        _prepare_out(out)
    if getattr(args, "live", False):
        return _run_live(args, spec, out)
    _refuse_too_big(spec, force=getattr(args, "force", False))
    result = _with_progress(
        f"{spec.meta.name} (virtual time)",
        spec.meta.duration,
        lambda done, total: f"{done / 3600:.2f} h / {total / 3600:.2f} h",
        lambda progress: run_virtual(
            spec,
            seed=args.seed,
            out=out,
            log_level=args.log_level,
            progress=progress,
            source=args.scenario,
            overrides=args.set or (),
            plots=not getattr(args, "no_plots", False),
            events=events,
        ),
    )
    events_file = "" if events == "none" else " events.jsonl"
    outputs = f"summary.json run.json{events_file} jobs.csv tokens.csv jobs.log"
    if not getattr(args, "no_plots", False):
        outputs += " report.html"
    return _report(result, f"outputs in {out}/: {outputs}" if out is not None else None)


def _run_live(args: argparse.Namespace, spec: Scenario, out: Path | None) -> int:
    from .live import LiveError, RunCA, run_live

    tls = None
    given = [args.ca, args.cert, args.key]
    if any(given):
        if not all(given):
            raise _Usage("--ca, --cert and --key go together (expected all three or none)")
        tls = RunCA.existing(ca=Path(args.ca), cert=Path(args.cert), key=Path(args.key))
    try:
        result = _with_progress(
            f"{spec.meta.name} (live)",
            spec.meta.duration,
            lambda done, total: f"{done:.0f} s / {total:.0f} s",
            lambda progress: run_live(
                spec,
                Path(args.scenario),
                overrides=args.set or (),
                seed=args.seed,
                out=out,
                log_level=args.log_level,
                tls=tls,
                keep_workdir=args.keep_workdir,
                progress=progress,
                events=getattr(args, "events", "all"),
            ),
        )
    except LiveError as exc:
        sys.stderr.write(f"scitokens-batch: live run failed: {exc}\n")
        return EXIT_FAILED
    logs = f"outputs in {out}/ (service logs in {out}/logs/)"
    return _report(result, logs if out is not None else None)


@contextlib.contextmanager
def _study_progress(name: str) -> Iterator[Callable[[dict[str, Any], int, int], None]]:
    """A study's progress: a bar with ETA on a terminal, else one stderr line per finished run."""
    from .study import describe_result

    if not sys.stderr.isatty():

        def line(result: dict[str, Any], done: int, total: int) -> None:
            sys.stderr.write(f"[{done}/{total}] {describe_result(result)}\n")
            sys.stderr.flush()

        yield line
        return
    from rich.progress import TimeRemainingColumn

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[counted]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        # The total is known from the first result on (a search's grows as it goes).
        task = bar.add_task(f"study {name}", total=None, counted="starting workers")

        def update(result: dict[str, Any], done: int, total: int) -> None:
            bar.update(task, completed=done, total=total, counted=f"{done}/{total} runs")

        yield update


def _cmd_sweep(args: argparse.Namespace) -> int:
    """Run a study (``sweep STUDY.toml``) or a quick sweep of a plain scenario."""
    from .study import (
        describe_executor,
        is_study_file,
        load_study,
        quick_study,
        run_study,
    )

    path = Path(args.study)
    if args.grid or args.seeds is not None or args.metric or not is_study_file(path):
        if is_study_file(path):
            raise _Usage(
                f"{path}: holds a [study] table: expected no --grid/--seeds/--metric with it "
                "(edit the study instead)"
            )
        study = quick_study(
            path,
            grid=args.grid or (),
            seeds=args.seeds if args.seeds is not None else 1,
            metrics=args.metric or (),
            fixed=args.set or (),
        )
    else:
        if args.set:
            raise _Usage(
                "--set goes with a plain scenario; a study file fixes values with set = [...]"
            )
        study = load_study(path)
    if args.workers is not None and args.workers < 1:
        raise _Usage(f"--workers: expected a number >= 1, received {args.workers}")
    out = Path(args.out) if args.out else Path(f"{path.stem}-study")
    console = _console()
    with _study_progress(study.name) as progress:
        outcome = run_study(
            study,
            out=out,
            workers=args.workers,
            scheduler=args.scheduler,
            resume=args.resume,
            keep_runs=args.keep_runs,
            progress=progress,
        )
    m = outcome.manifest
    console.print(
        f"study {study.name}: {m['points']} point(s) x {len(study.seeds)} seed(s) = "
        f"{m['runs']} runs ({m['resumed']} resumed), {m['failed']} failed, "
        f"{m['wall_seconds']:.1f} s on {describe_executor(m['executor'])}"
    )
    for failure in m["failures"][:10]:
        sys.stdout.write(
            f"FAILED: point {failure['point']} seed {failure['seed']}: {failure['error']}\n"
        )
    if outcome.search_error:
        sys.stdout.write(f"FAILED: search refused: {outcome.search_error}\n")
    elif (outcome.out / "search.json").exists():
        search = json.loads((outcome.out / "search.json").read_text())
        b = search["boundary"]
        sys.stdout.write(
            f"boundary of '{search['condition']}' along {search['parameter']}: "
            f"min {b['min']:g}, median {b['median']:g}, max {b['max']:g} {search['unit']}\n"
        )
    sys.stdout.write(
        f"outputs in {out}/: study.json results.csv results.parquet aggregate.csv report.html\n"
    )
    return EXIT_OK if outcome.ok else EXIT_FAILED


def _cmd_serve(args: argparse.Namespace) -> int:
    """Run one actor as a service until SIGTERM (``scitokens-batch serve ROLE --config F``)."""
    import trio

    from .live import load_service_config, serve

    config = load_service_config(Path(args.config))
    if config.role != args.role:
        raise _Usage(
            f"{args.config}: role: expected {args.role!r} (the command line), "
            f"received {config.role!r}"
        )
    trio.run(serve, config)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace) -> int:
    """Run the bundled reference scenario and print its summary (``make demo``)."""
    # The package ships its own copy (package data), so the demo works from an installed
    # wheel as well as from a checkout; scenarios/reference.toml is the user-facing copy and
    # tests/test_packaging.py keeps the two identical.
    bundled = importlib.resources.files("scitokens_batch") / "_scenarios" / "reference.toml"
    with importlib.resources.as_file(bundled) as scenario:
        if not scenario.is_file():
            raise _Usage(f"demo: the bundled scenario is missing from the package ({scenario})")
        ns = argparse.Namespace(
            scenario=str(scenario), set=[], seed=None, out=args.out, log_level="error"
        )
        return _cmd_run(ns)


def _cmd_token_demo(args: argparse.Namespace) -> int:
    """Mint a token with a fresh key, verify it, print both."""
    key = SigningKey.generate(Algorithm(args.alg))
    now = _wall_now()
    issuer, audience = "https://issuer.demo.example/vo", "https://storage.demo.example"
    claims = build_claims(
        profile=Profile.SCITOKENS,
        issuer=issuer,
        subject="alice",
        audience=audience,
        scopes="read:/frames write:/results/alice",
        issued_at=now,
        lifetime=600,
        jti=str(uuid.uuid4()),
    )
    token = encode(claims, key)
    verifier = verifier_for(issuer, [audience], [key.public], now=now, base_path="/vo")
    header, _ = peek(token)
    console = _console()
    console.print(
        _claims_table(f"minted token {short_hash(token)} ({len(token)} bytes)", header, claims)
    )
    table = Table(title="verification at the data server (base path /vo)", header_style="bold")
    for col in ("operation", "path", "verdict", "status"):
        table.add_column(col)
    for op, path in [
        (Operation.READ, "/vo/frames/f1.gwf"),
        (Operation.READ, "/vo/framesets/x"),
        (Operation.CREATE, "/vo/results/alice/out.h5"),
        (Operation.CREATE, "/vo/results/bob/out.h5"),
    ]:
        v = verifier.authorize(token, now=now, op=op, path=path)
        if isinstance(v, VerifiedToken):
            table.add_row(op.value, path, "accepted", "201" if op is Operation.CREATE else "200")
        else:
            assert isinstance(v, Rejection)
            table.add_row(op.value, path, f"rejected: {v.reason.value}", str(v.status))
    late = verifier.check(token, now=now + 600)
    table.add_row(
        "read (t+600 s)",
        "/vo/frames/f1.gwf",
        f"rejected: {late.reason.value}" if isinstance(late, Rejection) else "accepted",
        str(late.status) if isinstance(late, Rejection) else "200",
    )
    console.print(table)
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------


def _help(description: str, examples: str) -> dict[str, Any]:
    """Keyword arguments of a sub-parser: a description, examples and the exit-code table."""
    return {
        "description": textwrap.fill(description, width=88),
        "epilog": f"examples:\n{examples}\n\n{EXIT_CODES}",
        "formatter_class": _Formatter,
    }


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' line breaks and shows the default of every option that has one."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def _build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="scitokens-batch",
        **_help(
            "Simulate the SciTokens / WLCG bearer-token architecture (issuer, credmon, schedd, "
            "execute hosts, storage, FTS, Rucio) in virtual time, or live over HTTPS on "
            "127.0.0.1, and work with real tokens. 'scitokens-batch COMMAND --help' tells more.",
            "  scitokens-batch demo\n"
            "  scitokens-batch check scenarios/reference.toml\n"
            "  scitokens-batch run scenarios/reference.toml --out ref --set scenario.seed=3\n"
            "  scitokens-batch token demo",
        ),
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    def scenario_args(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("scenario", metavar="SCENARIO", help="a scenario TOML file")
        sp.add_argument(
            "--set",
            action="append",
            metavar="KEY.PATH=VALUE",
            help="override a scalar, e.g. token_manager.renew_fraction=0.3",
        )

    run = sub.add_parser(
        "run",
        help="run a scenario in virtual time (or --live); exit 1 if a check fails",
        **_help(
            "Run a scenario in virtual time (seconds of simulated time take microseconds) and "
            "print its summary and any failed expectation. With --out, write summary.json, "
            "events.jsonl, jobs.csv, tokens.csv and report.html with its plots; the files of an "
            "earlier run in that directory are replaced as a set. A run estimated beyond "
            f"{DEFAULT_EVENT_LIMIT:,} events is refused unless --force. When stderr is not a "
            f"terminal, a progress line is written every {PROGRESS_EVERY:g} s.",
            "  scitokens-batch run scenarios/reference.toml\n"
            "  scitokens-batch run scenarios/issuer-outage.toml --out outage --seed 7\n"
            "  scitokens-batch run scenarios/reference.toml --set issuers.ligo."
            "access_token_lifetime=5m --no-plots --out short\n"
            "  scitokens-batch run scenarios/live-smoke.toml --live --out live",
        ),
    )
    scenario_args(run)
    run.add_argument("--seed", type=int, help="overrides scenario.seed")
    run.add_argument(
        "--out", metavar="DIR", help="write summary.json, events.jsonl, CSVs, report there"
    )
    run.add_argument(
        "--no-plots",
        action="store_true",
        help="with --out, skip report.html and its plots (studies do: nobody reads them)",
    )
    run.add_argument(
        "--events",
        choices=EVENT_OUTPUTS,
        default="all",
        help="with --out, what events.jsonl holds: every event (default), none (no file), or "
        f"errors: only {', '.join(sorted(ERROR_KINDS))}, and a failed terminated / "
        "transfer_state / jwks_fetch, an issuer request with status >= 400, a use at or after "
        "exp; the summary, CSVs, jobs.log and report are the same whatever the choice",
    )
    run.add_argument(
        "--force",
        action="store_true",
        help=f"run even when estimated beyond {DEFAULT_EVENT_LIMIT:,} events",
    )
    run.add_argument(
        "--log-level",
        default="warning",
        choices=["debug", "info", "warning", "error", "critical"],
        help="level of the actors' JSON log lines on stderr",
    )
    run.add_argument(
        "--live",
        action="store_true",
        help="run every actor as a real HTTPS service on 127.0.0.1, on the wall clock",
    )
    run.add_argument("--ca", metavar="PEM", help="live: CA bundle to trust (with --cert/--key)")
    run.add_argument("--cert", metavar="PEM", help="live: server certificate for 127.0.0.1")
    run.add_argument("--key", metavar="PEM", help="live: the certificate's private key")
    run.add_argument(
        "--keep-workdir",
        action="store_true",
        help="live: keep the services' configurations, logs and sandboxes",
    )
    run.set_defaults(func=_cmd_run)

    sw = sub.add_parser(
        "sweep",
        help="run a study: points x seeds on every core or a Dask cluster, then aggregate",
        description="Run a study file (a [study] table) or sweep a plain scenario with "
        "--grid/--seeds. Exit 0 when every run completed (and a search found its boundary), "
        "1 when some failed, 2 for a bad study file, 130 when interrupted.",
    )
    sw.add_argument("study", metavar="STUDY", help="a study TOML file, or a scenario with --grid")
    sw.add_argument("--out", metavar="DIR", help="output folder (default: ./<STUDY stem>-study)")
    sw.add_argument(
        "--workers", type=int, metavar="N", help="local worker processes (default: cores)"
    )
    sw.add_argument(
        "--scheduler", metavar="ADDRESS", help="an existing Dask scheduler, e.g. tcp://host:8786"
    )
    sw.add_argument("--resume", action="store_true", help="run only the runs --out lacks")
    sw.add_argument(
        "--keep-runs", action="store_true", help="also write each run's outputs under runs/"
    )
    sw.add_argument(
        "--grid",
        action="append",
        metavar="KEY=V1,V2,...",
        help="quick form: vary a scenario key over values (repeat to cross)",
    )
    sw.add_argument("--seeds", type=int, metavar="N", help="quick form: seeds 1..N (default 1)")
    sw.add_argument("--metric", action="append", metavar="PATH", help="quick form: a summary path")
    sw.add_argument(
        "--set", action="append", metavar="KEY.PATH=VALUE", help="quick form: fixed override"
    )
    sw.set_defaults(func=_cmd_sweep)

    srv = sub.add_parser(
        "serve",
        help="run one actor as a long-lived HTTPS service (live mode runs these)",
        **_help(
            "Run one actor as an HTTPS service on the address its configuration names, until "
            "SIGTERM or SIGINT. 'run --live' writes these configurations and starts one process "
            "per actor; run it by hand to put an actor on another host (docs/live.md).",
            "  scitokens-batch serve issuer --config work/issuer-ligo.json\n"
            "  scitokens-batch serve data-server --config work/data-server-frames.json",
        ),
    )
    srv.add_argument(
        "role",
        choices=[
            "issuer",
            "token-manager",
            "queue-manager",
            "execute-host",
            "data-server",
            "transfer-service",
            "data-manager",
        ],
    )
    srv.add_argument("--config", required=True, metavar="FILE", help="service configuration")
    srv.set_defaults(func=_cmd_serve)

    check = sub.add_parser(
        "check",
        help="validate a scenario without running it",
        **_help(
            "Validate a scenario file (and --set overrides) without running it: syntax, types, "
            "ranges, names and cross-references. Costs as much as the file is long, whatever "
            "the pool it describes; prints what the scenario holds and its event estimate.",
            "  scitokens-batch check scenarios/reference.toml\n"
            "  scitokens-batch check my.toml --set workloads[0].jobs=1000",
        ),
    )
    scenario_args(check)
    check.set_defaults(func=_cmd_check)

    demo = sub.add_parser(
        "demo",
        help="run the bundled reference scenario and print its summary",
        **_help(
            "Run the reference scenario shipped with the package (a copy of "
            "scenarios/reference.toml) in virtual time and print its summary; works from an "
            "installed package as well as from a checkout.",
            "  scitokens-batch demo\n  scitokens-batch demo --out demo-out",
        ),
    )
    demo.add_argument(
        "--out",
        metavar="DIR",
        help="also write the run's outputs (summary.json, events, CSVs, report.html) there",
    )
    demo.set_defaults(func=_cmd_demo)

    tok = sub.add_parser(
        "token",
        help="make, inspect, verify and discover tokens",
        **_help(
            "Work with real tokens on the wall clock: make a key, mint, inspect (never "
            "verifies), verify against a JWKS, find the token WLCG discovery would use. "
            "Tokens and keys are never printed unless asked for.",
            "  scitokens-batch token keygen --out keys\n"
            "  scitokens-batch token mint --key keys/private.pem --issuer https://iss.example/vo"
            " --aud https://se.example --scope read:/data --lifetime 600 > tok\n"
            "  scitokens-batch token verify tok --jwks keys/jwks.json --issuer "
            "https://iss.example/vo --aud https://se.example --op read --path /data/f\n"
            "  scitokens-batch token discover",
        ),
    )
    tsub = tok.add_subparsers(dest="token_command", required=True, parser_class=_Parser)

    def common(sp: argparse.ArgumentParser) -> argparse.ArgumentParser:
        sp.add_argument("--json", action="store_true", help="machine-readable output")
        return sp

    kg = common(tsub.add_parser("keygen", help="write private.pem (0600), public.pem, jwks.json"))
    kg.add_argument("--alg", choices=["ES256", "RS256"], default="ES256")
    kg.add_argument("--out", required=True, metavar="DIR")
    kg.add_argument(
        "--kid", type=_non_empty("a non-empty key id"), help="key id (default: RFC 7638 thumbprint)"
    )
    kg.set_defaults(func=_cmd_keygen)

    mint = common(tsub.add_parser("mint", help="sign a token and print it"))
    mint.add_argument("--key", required=True, metavar="DIR/private.pem")
    mint.add_argument("--issuer", required=True, metavar="URL")
    mint.add_argument(
        "--aud", required=True, action="append", metavar="AUD", help="audience (repeat for several)"
    )
    mint.add_argument(
        "--scope",
        required=True,
        type=_non_empty("at least one scope"),
        help='space-separated, e.g. "read:/a write:/b"',
    )
    mint.add_argument("--lifetime", type=_lifetime, default=600.0, metavar="SECONDS")
    mint.add_argument("--profile", choices=["scitokens", "wlcg"], default="scitokens")
    mint.add_argument("--sub", default="scitokens-batch", metavar="SUBJECT")
    mint.add_argument("--nbf-backdate", type=_backdate, default=0.0, metavar="SECONDS")
    mint.add_argument("--group", action="append", metavar="GROUP", help="wlcg.groups entry")
    mint.set_defaults(func=_cmd_mint)

    ins = common(tsub.add_parser("inspect", help="print header and claims (never verifies)"))
    ins.add_argument("token", metavar="TOKEN", help="the token, a file holding it, or - for stdin")
    ins.set_defaults(func=_cmd_inspect)

    ver = common(tsub.add_parser("verify", help="verify a token; exit 0 accepted, 1 rejected"))
    ver.add_argument("token", metavar="TOKEN", help="the token, a file holding it, or - for stdin")
    ver.add_argument("--jwks", required=True, metavar="FILE")
    ver.add_argument("--issuer", required=True, metavar="URL")
    ver.add_argument("--aud", required=True, action="append", metavar="AUD")
    ver.add_argument("--op", choices=sorted(_OPS))
    ver.add_argument("--path", metavar="P", help="server path of the access (with --op)")
    ver.add_argument(
        "--base-path", default="/", metavar="B", help="server path the token path / stands for"
    )
    ver.add_argument("--leeway", type=_nonneg_float, default=0.0, metavar="SECONDS")
    ver.add_argument(
        "--now",
        type=_unix_time,
        default=None,
        metavar="UNIX",
        help="verify as of this unix time (default: now)",
    )
    ver.set_defaults(func=_cmd_verify)

    dis = common(
        tsub.add_parser("discover", help="WLCG bearer token discovery: where is my token?")
    )
    dis.add_argument("--show", action="store_true", help="also print the token itself")
    dis.add_argument("--purpose", help="look for bt_u<euid>-<purpose> files (F4)")
    dis.set_defaults(func=_cmd_discover)

    tdemo = tsub.add_parser("demo", help="mint a token with a fresh key and verify it")
    tdemo.add_argument("--alg", choices=["ES256", "RS256"], default="ES256")
    tdemo.set_defaults(func=_cmd_token_demo)
    return p


def _seconds(*, strictly_positive: bool) -> Callable[[str], float]:
    """An argparse type for a number of seconds, > 0 or >= 0."""
    bound = "> 0" if strictly_positive else ">= 0"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a number of seconds (got {text!r})"
            ) from None
        if not math.isfinite(v) or v < 0 or (strictly_positive and v == 0):
            raise argparse.ArgumentTypeError(f"expected finite {bound} seconds (got {text!r})")
        return v

    return parse


_positive_float = _seconds(strictly_positive=True)
_nonneg_float = _seconds(strictly_positive=False)


def _finite(what: str, low: float, high: float) -> Callable[[str], float]:
    """An argparse type for a finite number in [low, high] ("not inside" refuses NaN too)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (low <= value <= high):
            raise argparse.ArgumentTypeError(
                f"expected {what} from {low:g} to {high:g}, received {text!r}"
            )
        return value

    return parse


_lifetime = _finite("seconds", MIN_LIFETIME, MAX_LIFETIME)
_backdate = _finite("seconds", 0.0, MAX_LIFETIME)
_unix_time = _finite("unix seconds", 0.0, MAX_TIME)


def _non_empty(what: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, received {text!r}")
        return text

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (see :data:`EXIT_CODES`).

    One handler for every command turns what escapes into an exit code and one line on stderr:
    bad input 2, an interrupt 130 (also when trio delivers it inside an exception group), an
    environmental failure (a file or stream we cannot write, an encoding that cannot show the
    output) 2, and anything else, which is our bug, 70 with the traceback in a file it names.
    """
    _tolerant_streams()
    # argparse exits by itself (SystemExit 0 for --help, 2 for a usage error).
    args = _build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BaseException as exc:
        return _exit_for(exc, args)
    return code


def _exit_for(exc: BaseException, args: argparse.Namespace) -> int:
    """The exit code for an exception that reached main, after one line on stderr."""
    if isinstance(exc, SystemExit):  # someone chose an exit code on purpose
        return exc.code if isinstance(exc.code, int) else EXIT_FAILED
    found = _first(exc, KeyboardInterrupt)
    if found is not None:
        _say("interrupted")
        return EXIT_INTERRUPTED
    found = _first(exc, LocalInputError)
    if found is not None:
        _say(f"error: {found}")
        return EXIT_BAD_INPUT
    found = _first(exc, OSError, UnicodeError)
    if found is not None:
        _say(f"error: {_environmental(found)}")
        return EXIT_BAD_INPUT
    where = _write_crash(exc, args)
    _say(
        f"internal error: {type(exc).__name__}: {_one_line(str(exc))} (this is a bug in "
        f"scitokens-batch; traceback in {where})"
    )
    return EXIT_SOFTWARE


def _first(exc: BaseException, *kinds: type[BaseException]) -> BaseException | None:
    """``exc`` if it is one of ``kinds``, else the first such exception inside its group."""
    if isinstance(exc, kinds):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        matched, _ = exc.split(kinds)
        found: BaseException | None = matched
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        return found
    return None


def _environmental(exc: BaseException) -> str:
    if isinstance(exc, UnicodeError):
        return f"cannot encode the output for this terminal ({exc}); set PYTHONIOENCODING=utf-8"
    assert isinstance(exc, OSError)
    what = exc.strerror or str(exc) or type(exc).__name__
    name = f"{exc.filename}: " if exc.filename else ""
    return f"{name}{what}"


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:200] + "..."


def _say(line: str) -> None:
    try:
        sys.stderr.write(f"scitokens-batch: {line}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr itself is gone: the exit code says it all
        pass


def _write_crash(exc: BaseException, args: argparse.Namespace) -> str:
    """Write the traceback to ``--out/crash.txt`` when there is such a directory, else a temp
    file; returns where it went (or why it could not be written)."""
    text = "".join(traceback.format_exception(exc))
    out = getattr(args, "out", None)
    if isinstance(out, str) and os.path.isdir(out):
        path = Path(out) / "crash.txt"
        try:
            _files.write_public(path, text)
            return str(path)
        except OSError:
            pass
    try:
        fd, name = tempfile.mkstemp(prefix="scitokens-batch-crash-", suffix=".txt")
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as stream:
            stream.write(text)
        return name
    except OSError as err:
        return f"nowhere: {err.strerror}"


def _tolerant_streams() -> None:
    """Never die of an encoding: characters the terminal cannot show are escaped."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="backslashreplace")

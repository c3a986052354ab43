"""Fuzzing the decoder: >= 100,000 seeded mutations, 0 escapes expected.

Each mutation of a seed file (every allowed container, multi-page TIFF/GIF/PDF/APNG
included, and refused ones: QOI, DDS, ICO, ...; see ``extractor.testing.fuzz``) is
decoded page by page as the pipeline does. An outcome is "decoded", "refused"
(``BadImageError``) or an escape (any other exception: a bug that would fail a batch).
Work is split into chunks of ``--chunk`` mutations over ``--workers`` processes, each
chunk seeded by (``--seed``, chunk index), so any escape can be replayed alone. A
worker that dies (a crash in native code) is counted per chunk. ``--baseline`` also runs
the same mutated bytes through the decoder main had before the allow-list (a copy
below) for the first N mutations, to show the harness finds what it is looking for.

    nice .venv/bin/python bench/fuzz_decode.py --mutations 100000 --workers 2 --baseline 10000

Results: stdout (markdown) and bench/results/fuzz_decode.json.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import random
import resource
import sys
import time
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "include"))

MEMORY_LIMIT = 4 << 30  # address space per worker: a decoder that over-allocates fails, not the host
_SEEDS: dict[str, bytes] = {}


def _init_worker() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    warnings.simplefilter("ignore")
    from extractor.testing.fuzz import seed_files

    _SEEDS.update(seed_files())


def legacy_decode(data: bytes) -> None:
    """main's ``decode_image`` before the allow-list (7d42fc6): only these exceptions
    were turned into ``BadImageError``; everything else escaped."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    from extractor.errors import BadImageError

    if not data:
        raise BadImageError("empty")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
    except UnidentifiedImageError:
        raise BadImageError("not an image") from None
    except Image.DecompressionBombError:
        raise BadImageError("bomb") from None
    except (OSError, ValueError, SyntaxError):
        raise BadImageError("header") from None
    if width * height > 40_000_000 or min(width, height) < 32:
        raise BadImageError("size")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        raise BadImageError("corrupt") from None
    ImageOps.exif_transpose(image).convert("RGB")


def _legacy_status(data: bytes) -> tuple[str, str]:
    from extractor.errors import BadImageError

    try:
        legacy_decode(data)
    except BadImageError:
        return "refused", ""
    except Exception as exc:  # noqa: BLE001 - counting escapes is the point
        return "escaped", type(exc).__name__
    return "decoded", ""


def run_chunk(args: tuple[int, int, int, bool]) -> dict:
    """Mutations [chunk * size, chunk * size + size) of the seeded stream."""
    from extractor.testing.fuzz import decode_outcome, mutate

    base_seed, chunk, size, baseline = args
    rng = random.Random(f"{base_seed}:{chunk}")
    names, others = sorted(_SEEDS), list(_SEEDS.values())
    tally, kinds, legacy = Counter(), Counter(), Counter()
    escapes, legacy_types, slowest = [], Counter(), (0.0, "")
    for i in range(size):
        name = names[(chunk * size + i) % len(names)]
        kind, data = mutate(_SEEDS[name], rng, others)
        t0 = time.perf_counter()
        outcome = decode_outcome(data)
        took = time.perf_counter() - t0
        slowest = max(slowest, (took, f"{name}/{kind} chunk {chunk} #{i}"))
        tally[f"{name}:{outcome.status}"] += 1
        kinds[kind] += 1
        if outcome.status == "escaped":
            escapes.append({"chunk": chunk, "index": i, "seed": name, "mutation": kind,
                            "error": outcome.reason})
        if baseline:
            status, error = _legacy_status(data)
            legacy[f"{name}:{status}"] += 1
            if error:
                legacy_types[error] += 1
    return {"tally": tally, "kinds": kinds, "escapes": escapes, "legacy": legacy,
            "legacy_types": legacy_types, "slowest": slowest}


def _run_pool(chunks: list[tuple[int, int, int, bool]], workers: int) -> tuple[dict[int, dict], list]:
    """(results by chunk index, chunks not finished because a worker died)."""
    results: dict[int, dict] = {}
    with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
        futures = {pool.submit(run_chunk, c): c for c in chunks}
        for future in as_completed(futures):
            try:
                results[futures[future][1]] = future.result()
            except BrokenProcessPool:
                pass
    return results, [c for c in chunks if c[1] not in results]


def fuzz(mutations: int, chunk_size: int, workers: int, seed: int, baseline: int) -> dict:
    """``baseline``: how many of the first mutations also go through main's old decoder."""
    chunks = [(seed, c, chunk_size, c * chunk_size < baseline) for c in range(-(-mutations // chunk_size))]
    results, unfinished = _run_pool(chunks, workers)
    crashed = []
    for chunk in unfinished:  # alone, in a fresh worker: the one that dies again crashed
        again, still = _run_pool([chunk], 1)
        results.update(again)
        crashed += [c[1] for c in still]
    tally, kinds, legacy, legacy_types = Counter(), Counter(), Counter(), Counter()
    escapes, slowest = [], (0.0, "")
    for result in results.values():
        tally.update(result["tally"])
        kinds.update(result["kinds"])
        legacy.update(result["legacy"])
        legacy_types.update(result["legacy_types"])
        escapes += result["escapes"]
        slowest = max(slowest, tuple(result["slowest"]))
    return {"tally": tally, "kinds": kinds, "escapes": escapes, "crashed_chunks": crashed,
            "legacy": legacy, "legacy_types": legacy_types, "slowest": slowest}


def summarize(raw: dict, args: argparse.Namespace, wall_s: float) -> dict:
    from extractor.testing.fuzz import ALLOWED_SEEDS

    per_container: dict[str, dict[str, int]] = {}
    for key, n in sorted(raw["tally"].items()):
        name, status = key.split(":")
        per_container.setdefault(name, {"decoded": 0, "refused": 0, "escaped": 0})[status] += n
    total = sum(raw["tally"].values())
    out = {
        "mutations": total, "escapes": len(raw["escapes"]), "crashed_chunks": raw["crashed_chunks"],
        "chunk_size": args.chunk, "seed": args.seed, "workers": args.workers, "wall_s": round(wall_s, 1),
        "per_container": {k: {**v, "allowed": k in ALLOWED_SEEDS} for k, v in per_container.items()},
        "mutation_kinds": dict(sorted(raw["kinds"].items())),
        "escape_examples": raw["escapes"][:20],
        "slowest_decode_s": round(raw["slowest"][0], 3), "slowest_decode": raw["slowest"][1],
        "python": platform.python_version(), "machine": platform.machine(),
    }
    if args.baseline:
        legacy_escapes = sum(n for k, n in raw["legacy"].items() if k.endswith(":escaped"))
        out["baseline_before_allow_list"] = {"mutations": sum(raw["legacy"].values()),
                                             "escapes": legacy_escapes,
                                             "exception_types": dict(raw["legacy_types"].most_common())}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--baseline", type=int, default=0, metavar="N",
                        help="also run the first N mutations through main's old decoder")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "fuzz_decode.json"))
    args = parser.parse_args()
    import PIL
    import pillow_heif
    import pypdfium2

    t0 = time.perf_counter()
    raw = fuzz(args.mutations, args.chunk, args.workers, args.seed, args.baseline)
    result = summarize(raw, args, time.perf_counter() - t0)
    result["versions"] = {"pillow": PIL.__version__, "pypdfium2": str(pypdfium2.PYPDFIUM_INFO),
                          "pdfium": str(pypdfium2.PDFIUM_INFO),
                          "pillow_heif": pillow_heif.__version__}
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    crashed = len(result["crashed_chunks"])
    print(f"| mutations | escapes | crashed chunks | wall s |\n| --- | --- | --- | --- |\n"
          f"| {result['mutations']:,} | {result['escapes']} | {crashed} | {result['wall_s']} |")
    print("\n| container | allowed | decoded | refused | escaped |\n| --- | --- | --- | --- | --- |")
    for name, c in result["per_container"].items():
        allowed = "yes" if c["allowed"] else "no"
        print(f"| {name} | {allowed} | {c['decoded']:,} | {c['refused']:,} | {c['escaped']} |")
    if args.baseline:
        print(f"\nbaseline (main before the allow-list): {result['baseline_before_allow_list']}")


if __name__ == "__main__":
    main()

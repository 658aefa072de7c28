"""Ingest throughput: `python -m benchmarks.ingest [--rows 1e7] [--repeats 3]`.

1. NIR checks per second on one core: the Numba kernel (kernels/_nir.check_nir) against
   python-stdnum's `nir.is_valid` (the named baseline), on declared NIRs of synthetic data
   (with their noise: missing, bad keys, 13-character values...). Goal: >= 100x stdnum.
2. The ingest stage (read, check, normalise, split rejects, write Parquet) on career +
   resource rows of synthetic data, from Parquet and from `;`-separated CSV, on a local
   cluster of 2 worker processes; baseline in the same run: DuckDB (same 2 threads) copying
   the same files to Parquet with no checks at all (`COPY (SELECT * FROM read_...) TO ...`).
Results: benchmarks/results/ingest.json and ingest.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from ._common import local_client, markdown_table, measure, write_results


def _nir_bench(values: pa.Array, repeats: int) -> dict:
    from stdnum.fr import nir as stdnir

    from nirlink.kernels._nir import check_nir

    check_nir(values.slice(0, 1000))  # compile
    kt = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        check_nir(values)
        kt.append(time.perf_counter() - t0)
    sample = [v for v in values.slice(0, 200_000).to_pylist()]
    st = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for v in sample:
            stdnir.is_valid(v) if v is not None else False
        st.append(time.perf_counter() - t0)
    kernel_rate = len(values) / statistics.median(kt)
    stdnum_rate = len(sample) / statistics.median(st)
    return {"values": len(values), "kernel_per_s": kernel_rate, "stdnum_per_s": stdnum_rate,
            "ratio": kernel_rate / stdnum_rate, "kernel_times_s": kt, "stdnum_times_s": st}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=float, default=1e7, help="career + resource rows to ingest")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    from nirlink.engine.io._readers import InputSpec
    from nirlink.engine.stages._ingest import run_ingest
    from nirlink.engine.synth._generate import synth
    from nirlink.engine.synth._params import SynthParams

    scratch = Path(args.dir or tempfile.mkdtemp(prefix="nirlink-bench-ingest-"))
    persons = max(1000, int(args.rows / 127))
    with local_client(n_workers=args.workers) as client:
        data = scratch / "data"
        if not (data / "_synth.json").exists():
            synth(data, persons=persons, client=client, params=SynthParams(seed=3), overwrite=True)
        career_files = sorted((data / "career").glob("*.parquet"))
        resource_files = sorted((data / "resource").glob("*.parquet"))
        rows = sum(pq.read_metadata(f).num_rows for f in career_files + resource_files)
        # CSV copies
        csv_dir = scratch / "csv"
        if not csv_dir.exists():
            csv_dir.mkdir()
            for f in career_files + resource_files:
                kind = f.parent.name
                pacsv.write_csv(pq.read_table(f), csv_dir / f"{kind}-{f.stem}.csv",
                                write_options=pacsv.WriteOptions(delimiter=";"))
        nir_values = pq.read_table(career_files[0], columns=["declared_nir"]).column("declared_nir").combine_chunks()
        nir = _nir_bench(nir_values, args.repeats)

        def ingest(fmt):
            if fmt == "parquet":
                specs = [InputSpec("career", "career", (str(data / "career"),)),
                         InputSpec("resource", "resource", (str(data / "resource"),))]
            else:
                specs = [InputSpec("career", "career", (str(csv_dir / "career-*.csv"),)),
                         InputSpec("resource", "resource", (str(csv_dir / "resource-*.csv"),))]
            return run_ingest(specs, scratch / f"out-{fmt}", client=client)

        def duck(fmt):
            con = duckdb.connect()
            con.execute(f"set threads = {args.workers}")
            out = scratch / f"duck-{fmt}"
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            for kind in ("career", "resource"):
                src = (f"read_parquet('{data / kind}/*.parquet')" if fmt == "parquet"
                       else f"read_csv('{csv_dir}/{kind}-*.csv', delim=';', header=true, all_varchar=true)")
                con.execute(f"copy (select * from {src}) to '{out / kind}.parquet' (format parquet)")
            return True

        results, table = {}, []
        for fmt in ("parquet", "csv"):
            m = measure(lambda: ingest(fmt), args.repeats)
            d = measure(lambda: duck(fmt), args.repeats)
            results[fmt] = {"nirlink": {k: m[k] for k in ("median_s", "times_s", "peak_rss_bytes")},
                            "duckdb_copy": {k: d[k] for k in ("median_s", "times_s", "peak_rss_bytes")},
                            "rows_per_s": rows / m["median_s"], "duckdb_rows_per_s": rows / d["median_s"]}
            table.append([fmt, f"{rows:,}", f"{m['median_s']:.2f}", f"{rows / m['median_s'] / 1e6:.2f}",
                          f"{m['peak_rss_bytes'] / 2**30:.2f}", f"{d['median_s']:.2f}",
                          f"{rows / d['median_s'] / 1e6:.2f}", f"{d['median_s'] / m['median_s']:.2f}"])
    header = (f"NIR checks, one core: kernel {nir['kernel_per_s'] / 1e6:.1f} M/s, python-stdnum "
              f"{nir['stdnum_per_s'] / 1e6:.3f} M/s: **{nir['ratio']:.0f}x** (goal >= 100x), on {nir['values']:,} "
              f"declared NIRs of synthetic data, median of {args.repeats}.\n\n"
              f"Ingest stage, {args.workers} worker processes, median of {args.repeats} runs "
              "(nirlink checks and normalises every row and writes accepted rows + rejects; the DuckDB baseline "
              "only copies the rows):\n\n")
    md = header + markdown_table(["input", "rows", "nirlink s", "nirlink M rows/s", "peak RSS GiB", "DuckDB copy s",
                                  "DuckDB M rows/s", "nirlink / DuckDB speed"], table)
    write_results("ingest", {"rows": rows, "nir": nir, "ingest": results, "workers": args.workers,
                             "repeats": args.repeats}, md, scratch=None if args.dir else scratch)


if __name__ == "__main__":
    main()

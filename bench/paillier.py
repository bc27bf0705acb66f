"""Packed Paillier against one value per ciphertext, on this machine.

Reference: phe's `public_key.encrypt(float)`, one ciphertext per value (what a naive
homomorphic FL system does). fedsilo: quantize to 16 bits, pack as many values per plaintext
as the 2048-bit key allows (with headroom for 64 clients' sums), raw-encrypt, on 1 and 2
processes. Several runs each; medians printed. Writes bench/results/paillier.json.

    .venv/bin/python bench/paillier.py [--values 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from machine import machine
from phe import paillier

from fedsilo.paillier import PackingSpec, decrypt_sum, encrypt_update, multiply_range

RESULTS = Path(__file__).parent / "results"


def median_seconds(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--values", type=int, default=100_000)
    parser.add_argument("--reference-values", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    info = machine()
    print(f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}")
    public, private = paillier.generate_paillier_keypair(n_length=2048)
    spec = PackingSpec(key_bits=2048, num_clients=64, clip=0.5, value_bits=16)
    rng = np.random.default_rng(0)
    values = rng.uniform(-0.4, 0.4, args.values).astype(np.float32)
    print(
        f"2048-bit key; {spec.slots_per_plaintext} values per ciphertext "
        f"({spec.slot_bits}-bit slots: 16 value bits + headroom for 64 clients)"
    )

    reference = values[: args.reference_values].astype(float).tolist()
    ref_s = median_seconds(lambda: [public.encrypt(v) for v in reference], args.runs)
    ref_rate = len(reference) / ref_s
    rows = {"one value per ciphertext (phe.encrypt)": ref_rate}
    for processes in (1, 2):
        seconds = median_seconds(
            lambda p=processes: encrypt_update(values, spec, public, processes=p), args.runs
        )
        rows[f"packed, {processes} process{'es' if processes > 1 else ''}"] = args.values / seconds

    uploads = [encrypt_update(values, spec, public, processes=2) for _ in range(3)]
    count = spec.num_ciphertexts(args.values)
    aggregate_s = median_seconds(lambda: multiply_range(uploads, public, 0, count), args.runs)
    aggregate = multiply_range(uploads, public, 0, count)
    decrypt_s = median_seconds(
        lambda: decrypt_sum(aggregate, private, spec, args.values, 3, processes=2), args.runs
    )

    print(f"\nencryption throughput, median of {args.runs} runs:")
    for name, rate in rows.items():
        print(f"  {name:<40} {rate:>12,.0f} values/s   x{rate / ref_rate:,.0f}")
    print(
        f"aggregate 3 uploads of {args.values:,} values: {aggregate_s:.3f} s; "
        f"decrypt the sum (2 processes): {decrypt_s:.3f} s"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "paillier.json").write_text(
        json.dumps(
            {
                "machine": info,
                "values": args.values,
                "runs": args.runs,
                "values_per_second": rows,
                "speedup_vs_reference": {name: rate / ref_rate for name, rate in rows.items()},
                "aggregate_seconds": aggregate_s,
                "decrypt_seconds": decrypt_s,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

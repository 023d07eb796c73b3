"""MPyC alone: mean and variance of N secret values among M parties (the analytics baseline).

Party 0 inputs the N values (as the producers' data), every party holds Shamir shares (t = 1 for
M = 4), the parties compute the sum and the sum of squares on secure NumPy arrays (one secure
inner product), and open them; mean and variance follow in the clear, as in the pipeline.

    .venv/bin/python bench/mpyc_meanvar.py -M4        # N from BENCH_ROWS (default 100000)

Party 0 prints one JSON line: the seconds from connected to the opened sums, and the result.
"""

from __future__ import annotations

import json
import os
import random
import time

import numpy as np
from mpyc.runtime import mpc


async def main() -> None:
    n = int(os.environ.get("BENCH_ROWS", "100000"))
    secint = mpc.SecInt(64)
    rnd = random.Random(int(os.environ.get("BENCH_SEED", "1")))
    values = np.array([rnd.randint(0, 1000) for _ in range(n)], dtype=np.int64)
    started = time.perf_counter()
    await mpc.start()  # the parties connect: not counted, as the pipeline's servers run already
    t0 = time.perf_counter()
    if mpc.pid == 0:
        x = secint.array(values)
    else:
        x = secint.array(np.zeros(n, dtype=np.int64))
    x = mpc.input(x, senders=0)
    s = mpc.np_sum(x)
    sq = x @ x
    total, squares = await mpc.output([s, sq])
    await mpc.shutdown()
    elapsed = time.perf_counter() - t0
    if mpc.pid == 0:
        mean = total / n
        var = squares / n - mean * mean
        print(
            json.dumps(
                {
                    "seconds": elapsed,
                    "connect": t0 - started,
                    "rows": n,
                    "mean": mean,
                    "variance": var,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    mpc.run(main())

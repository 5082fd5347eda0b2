"""Measure that fastconv releases the GIL: CALLS calls from one Python thread, then the same
calls split over two threads (every kernel on one OpenMP thread). Were the GIL held during
compute, two threads would take as long as one (ratio 1.0); released, about half (ratio 0.5 on
two free cores): two threads each doing CALLS calls finish in about the time one takes.

    python tests/measure_gil_release.py      # prints the times and the ratio

Not a test: the result depends on the machine's other load (notes/reliability.md records it).
"""
import threading
import time

import numpy as np

import fastconv

CALLS = 20


def main():
    x = np.random.default_rng(0).standard_normal((1, 32, 128, 128)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((32, 32, 3, 3)).astype(np.float32)
    fastconv.set_num_threads(1)
    cases = {"conv2d packed": lambda: fastconv.conv2d(x, w, padding=1, algorithm="packed"),
             "conv2d direct": lambda: fastconv.conv2d(x, w[:2], padding=1, algorithm="direct"),
             "conv_transpose2d": lambda: fastconv.conv_transpose2d(x, w, stride=2)}
    for name, call in cases.items():
        call()
        best_one = best_two = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            for _ in range(CALLS):
                call()
            best_one = min(best_one, time.perf_counter() - start)

            def half():
                for _ in range(CALLS // 2):
                    call()
            threads = [threading.Thread(target=half) for _ in range(2)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            best_two = min(best_two, time.perf_counter() - start)
        print(f"{name:<18} {CALLS} calls: one thread {best_one * 1e3:7.1f} ms, two threads "
              f"{best_two * 1e3:7.1f} ms: {best_two / best_one:.2f} of one thread's time")


if __name__ == "__main__":
    main()

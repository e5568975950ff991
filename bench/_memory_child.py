"""Child process of the memory benchmark: import one file, print the peak RSS.

Reads ``{"home", "csv", "name", "x25519", "ed25519"}`` (hex keys of the staff
identity, already unlocked by the parent) as JSON on stdin, so the child never
runs Argon2id (whose 256 MiB would dominate the peak). Prints one JSON line with
the peak resident set (see :func:`peak_kib`).
"""

from __future__ import annotations

import json
import resource
import sys
import time


def peak_kib() -> int:
    """Peak resident set of this process image, KiB.

    ``VmHWM`` from ``/proc/self/status``: on Linux ``getrusage().ru_maxrss``
    carries the parent's peak over fork and exec (the parent ran Argon2id),
    so it cannot show the child's own peak. Elsewhere, ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def main() -> None:
    job = json.loads(sys.stdin.read())
    for path in job.get("sys_path", []):
        sys.path.insert(0, path)
    import nacl.signing
    from nacl.public import PrivateKey

    from childvault.keys import Identity
    from childvault.vault import Vault

    ident = Identity(
        job["name"],
        PrivateKey(bytes.fromhex(job["x25519"])),
        nacl.signing.SigningKey(bytes.fromhex(job["ed25519"])),
        job.get("anchor"),
    )
    before = peak_kib()
    with Vault.open(job["home"], identity=ident) as v:
        t0 = time.perf_counter()
        # The in-file duplicate check keeps one fingerprint a row (it grows with
        # the file); this benchmark measures the import's own memory, so it is off.
        report = v.import_file(job["csv"], allow_duplicates=True)
        seconds = time.perf_counter() - t0
    peak = peak_kib()
    print(
        json.dumps(
            {"before_kib": before, "peak_kib": peak, "imported": report.imported, "s": seconds}
        )
    )


if __name__ == "__main__":
    main()

"""One export in its own process (see :mod:`.exports`): prints one JSON line with the bundle's
sizes, the export's wall time and this process's peak RSS."""

from __future__ import annotations

import json
import resource
import sys


def main(argv: list[str]) -> int:
    base, fmt, adapter, rank, batch_size, out = argv
    from mobile_peft.export import export_bundle

    result = export_bundle(base, fmt, out, adapter=adapter, rank=int(rank), batch_size=int(batch_size))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    print(
        json.dumps(
            {
                "export_seconds": round(result.seconds, 1),
                "total_bytes": result.total_bytes,
                "sizes": result.sizes,
                "peak_rss_bytes": peak,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

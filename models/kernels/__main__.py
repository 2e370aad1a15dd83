"""`python -m models.kernels`: build every C kernel now (into the cache `native` reads) and say
where it went; exit 1 when one cannot be built."""

import sys

from models.kernels import native

status = 0
for source in sorted(native.SOURCE_DIR.glob("*.c")):
    try:
        print(f"{source.stem}: {native.build(source.stem)}")
    except native.KernelBuildError as exc:
        print(f"{source.stem}: not built, the torch implementation will run: {exc}", file=sys.stderr)
        status = 1
sys.exit(status)

"""Generate the Python gRPC stubs in services/sgpo/v1 from protos/ (the one command; never hand-edit).

python scripts/gen_protos.py           # regenerate
python scripts/gen_protos.py --check   # exit 1 if the committed stubs are stale (CI)
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
OUT = ROOT / "services"
PKG = Path("sgpo") / "v1"
INIT = '"""Generated gRPC stubs for protos/sgpo/v1 (scripts/gen_protos.py). Do not edit."""\n'


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc  # dev extra

    files = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / PKG).glob("*.proto"))
    proto_include = str(Path(protoc.__file__).parent / "_proto")
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{proto_include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    (out / PKG / "__init__.py").write_text(INIT)
    return sorted(p.relative_to(out) for p in (out / PKG).iterdir() if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="fail if committed stubs differ from fresh ones")
    args = parser.parse_args()
    if not args.check:
        shutil.rmtree(OUT / PKG, ignore_errors=True)
        (OUT / PKG).mkdir(parents=True)
        print("\n".join(str(p) for p in generate(OUT)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = generate(Path(tmp))
        committed = sorted(p.relative_to(OUT) for p in (OUT / PKG).iterdir() if p.is_file())
        stale = [
            str(p)
            for p in fresh
            if not (OUT / p).exists() or not filecmp.cmp(Path(tmp) / p, OUT / p, shallow=False)
        ]
        extra = [str(p) for p in committed if p not in fresh]
    if stale or extra:
        print(f"gRPC stubs are stale: {stale + extra}. Run: python scripts/gen_protos.py", file=sys.stderr)
        return 1
    print("gRPC stubs are up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pack the trainable WIDER FACE images for the GPU machine, and plan the calls that carry them.

    python scripts/pack_device_data.py --data-root ~/widerface-all --out .device_data/pack \\
        --max-side 1024 --quality 75 --shard-mib 56

Packs (``ufssd.data.pack.write_pack``) every image the trainer may use: the train split and the
val images of ``val_train_images.txt``, never those of ``dev_images.txt`` (the script stops if
the two lists overlap). Then prints the pack's size, its shards, and which shards each ``device``
call carries: at most ``--call-mib`` MiB of carried files per call (the work tree, about 3 MiB,
travels too, within the 64 MiB of a call) and at most 8 carried paths (``ufssd.data.pack.plan_transfer``; ``scripts/device_train.py plan`` prints
the same calls with their commands); the manifest goes with the last call, so the pack is complete (and ``verify_pack`` passes) only once every call has arrived.
A warm machine keeps the ignored files of earlier calls, so the calls must follow each other
closely (``docs/data.md``, "Packs for the device").
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

_MIB = 2**20


def carried_files(out: Path, manifest) -> list[tuple[str, int]]:
    """The pack's files as ``device`` carries them: shards in order, the manifest last; paths
    relative to the working directory (the repository root) when they lie under it."""
    from ufssd.data.pack import MANIFEST_NAME

    base = out.resolve()
    try:
        base = base.relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    files = [((base / s.file).as_posix(), s.bytes) for s in manifest.shards]
    return files + [((base / MANIFEST_NAME).as_posix(), (out / MANIFEST_NAME).stat().st_size)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=Path("~/widerface-all"), help="WIDER FACE root")
    p.add_argument("--out", type=Path, default=Path(".device_data/pack"), help="the pack folder (git-ignored)")
    p.add_argument("--max-side", type=int, default=1024, help="longer image side after packing (default 1024)")
    p.add_argument("--quality", type=int, default=75,
                   help="JPEG quality (default 75: the originals' own; dev AP unchanged, docs/data.md)")
    p.add_argument("--shard-mib", type=float, default=56, help="shard size limit in MiB (default 56)")
    p.add_argument("--call-mib", type=float, default=60, help="carried MiB per device call (default 60)")
    p.add_argument("--overwrite", action="store_true", help="replace a different pack in --out")
    args = p.parse_args(argv)
    args.data_root = args.data_root.expanduser()
    args.out = args.out.expanduser()
    if args.shard_mib > args.call_mib:
        p.error(f"--shard-mib {args.shard_mib} is larger than --call-mib {args.call_mib}")
    return args


def trainable_samples(root: Path) -> list:
    """train + the val images of ``val_train_images.txt``, each sorted by name; refuses a
    ``val_train_images.txt`` that shares an image with ``dev_images.txt``."""
    from ufssd.widerface_files import DEV_LIST, VAL_TRAIN_LIST, DataError, read_image_list, read_split

    if (root / DEV_LIST).is_file():
        shared = set(read_image_list(root / DEV_LIST)) & set(read_image_list(root / VAL_TRAIN_LIST))
        if shared:
            raise DataError(f"{root / VAL_TRAIN_LIST} lists {len(shared)} dev images, e.g. {sorted(shared)[0]}")
    train = sorted(read_split(root, "train"), key=lambda s: s.name)
    val = sorted(read_split(root, "val", subset=root / VAL_TRAIN_LIST), key=lambda s: s.name)
    return train + val


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    from ufssd.data.pack import plan_transfer, write_pack
    from ufssd.widerface_files import VAL_TRAIN_LIST, DataError

    try:
        samples = trainable_samples(args.data_root)
        manifest = write_pack(
            samples, args.out, max_side=args.max_side, quality=args.quality, shard_mib=args.shard_mib,
            source=f"{args.data_root}: train + val ({VAL_TRAIN_LIST})", overwrite=args.overwrite,
            progress=True,
        )
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    files = carried_files(args.out, manifest)
    print(f"{manifest.count} images ({len(manifest.left_out)} left out), {manifest.num_faces} faces: "
          f"{manifest.total_bytes / _MIB:.1f} MiB in {len(manifest.shards)} shards, "
          f"manifest {files[-1][1] / _MIB:.2f} MiB ({args.out}{os.sep})")
    for item in manifest.left_out:
        print(f"  left out: {item.name}: {item.reason}")
    calls = plan_transfer(files, args.call_mib)
    print(f"{len(calls)} device calls of at most {args.call_mib:g} MiB carried each, back to back:")
    for k, call in enumerate(calls, start=1):
        mib = sum(s for _, s in call) / _MIB
        print(f"  call {k}: {mib:5.1f} MiB  carry={[p for p, _ in call]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Writes lower.tar.gz: the lower layer unionmount-testsuite's set_up.py
builds (directory `a` holding, for each i in 100..129, fooI, direct_symI,
indirect_symI, pointlessI, dirI/{a,pop/b,pop/c}, direct_dir_symI,
indirect_dir_symI, emptyI and rootfileI), as a layer tarball the scenarios
of this directory and of ts1/ use (`layer lower from "layers/lower.tar.gz"`).
Deterministic: fixed times, owners and order. Run it from this directory."""
import gzip
import io
import tarfile

MTIME = 1_000_000_000


def member(tar, name, kind, mode, uid=0, gid=0, data=b"", link=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.uid, info.gid = uid, gid
    info.uname = info.gname = ""
    info.mtime = MTIME
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def main():
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member(tar, "a", tarfile.DIRTYPE, 0o755)
        for i in range(100, 130):
            d = lambda n: f"a/{n}{i}"
            member(tar, d("foo"), tarfile.REGTYPE, 0o644, 1, 1, b":xxx:yyy:zzz")
            member(tar, d("direct_sym"), tarfile.SYMTYPE, 0o777, 1, 1, link=f"../a/foo{i}")
            member(tar, d("indirect_sym"), tarfile.SYMTYPE, 0o777, 1, 1, link=f"direct_sym{i}")
            member(tar, d("pointless"), tarfile.SYMTYPE, 0o777, 1, 1, link=f"no_foo{i}")
            member(tar, d("dir"), tarfile.DIRTYPE, 0o755)
            member(tar, d("dir") + "/a", tarfile.REGTYPE, 0o644)
            member(tar, d("dir") + "/pop", tarfile.DIRTYPE, 0o755)
            member(tar, d("dir") + "/pop/b", tarfile.REGTYPE, 0o644, data=b":aaa:bbb:ccc")
            member(tar, d("dir") + "/pop/c", tarfile.DIRTYPE, 0o755)
            member(tar, d("direct_dir_sym"), tarfile.SYMTYPE, 0o777, link=f"../a/dir{i}")
            member(tar, d("indirect_dir_sym"), tarfile.SYMTYPE, 0o777, link=f"direct_dir_sym{i}")
            member(tar, d("empty"), tarfile.DIRTYPE, 0o755)
            member(tar, d("rootfile"), tarfile.REGTYPE, 0o644, data=b":xxx:yyy:zzz")
    # ts1/ holds the same layer (a scenario's tarball may not be above it)
    for path in ("lower.tar.gz", "../ts1/layers/lower.tar.gz"):
        with open(path, "wb") as out:
            with gzip.GzipFile(fileobj=out, mode="wb", filename="", mtime=0) as gz:
                gz.write(raw.getvalue())


if __name__ == "__main__":
    main()

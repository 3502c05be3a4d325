#!/usr/bin/env python3
"""Writes scenarios/lab/layers/rootfs.tar: a tiny container root filesystem used
as a lower layer by the lab. Deterministic (fixed mtimes, numeric owners), so
running it again produces the same bytes."""
import io
import sys
import tarfile

OUT = sys.argv[1] if len(sys.argv) > 1 else "scenarios/lab/layers/rootfs.tar"

def add_dir(tf, name, mode=0o755):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.DIRTYPE
    ti.mode = mode
    ti.mtime = 0
    tf.addfile(ti)

def add_file(tf, name, data, mode=0o644):
    ti = tarfile.TarInfo(name)
    ti.size = len(data)
    ti.mode = mode
    ti.mtime = 0
    tf.addfile(ti, io.BytesIO(data))

def add_symlink(tf, name, target):
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.SYMTYPE
    ti.linkname = target
    ti.mode = 0o777
    ti.mtime = 0
    tf.addfile(ti)

with tarfile.open(OUT, "w", format=tarfile.PAX_FORMAT) as tf:
    add_dir(tf, "bin")
    add_file(tf, "bin/busybox", b"#!/bin/false\n", 0o755)
    add_symlink(tf, "bin/sh", "busybox")
    add_dir(tf, "etc")
    add_file(tf, "etc/hostname", b"rootfs\n")
    add_file(tf, "etc/os-release", b'ID=lab\nVERSION_ID="1"\n')
    add_dir(tf, "tmp", 0o1777)
    add_dir(tf, "var")
    add_dir(tf, "var/cache")
    add_dir(tf, "var/cache/apt")
    add_file(tf, "var/cache/apt/pkgcache.bin", b"\x00" * 64)

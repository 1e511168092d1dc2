#!/usr/bin/python3
# Debian's interpreter on purpose: python3-libtorrent only imports there.
"""Print the v1 info hash libtorrent's create_torrent gives for PATH.

usage: lt_create.py PATH PIECE_SIZE [--hybrid OUT.torrent]
With --hybrid, makes a v1+v2 hybrid torrent instead, writes it to OUT and
prints "v1 v2".
The torrent is v1-only, as `lodestone create` makes it. Files are added in
sorted path order: lt.add_files would use readdir order, which differs
between file systems; sorted order is the one libtorrent itself uses for v2
and hybrid torrents (file_storage::canonicalize) and the one Lodestone uses.
"""
import os
import sys

import libtorrent as lt


def main():
    path, piece = sys.argv[1], int(sys.argv[2])
    hybrid_out = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--hybrid" else None
    fs = lt.file_storage()
    if os.path.isdir(path):
        base = os.path.basename(os.path.abspath(path))
        entries = []
        for dirpath, _dirs, files in os.walk(path):
            for f in files:
                full = os.path.join(dirpath, f)
                rel = os.path.relpath(full, path)
                entries.append((rel.split(os.sep), os.path.getsize(full)))
        for parts, size in sorted(entries, key=lambda e: [p.encode() for p in e[0]]):
            fs.add_file("/".join([base] + parts), size)
    else:
        lt.add_files(fs, path)
    flags = 0 if hybrid_out else lt.create_torrent.v1_only
    ct = lt.create_torrent(fs, piece, flags=flags)
    lt.set_piece_hashes(ct, os.path.dirname(os.path.abspath(path)))
    data = lt.bencode(ct.generate())
    ti = lt.torrent_info(lt.bdecode(data))
    if hybrid_out:
        with open(hybrid_out, "wb") as f:
            f.write(data)
        print(str(ti.info_hashes().v1), str(ti.info_hashes().v2))
    else:
        print(str(ti.info_hashes().v1))


if __name__ == "__main__":
    sys.exit(main())

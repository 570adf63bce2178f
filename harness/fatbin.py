"""The GPU architectures a CUDA library carries, read from its fatbinaries without a GPU.

``nvcc`` puts each translation unit's device code in the ``.nv_fatbin`` section of the ELF
file as a fatbinary: a 16-byte header (magic 0xBA55ED50, version, header size, payload
size) and then entries, each with its own header. An entry is a cubin (kind 2, machine
code for one compute capability) or PTX (kind 1, the virtual ISA the driver compiles at
load time for a newer GPU). The entry header holds the architecture (e.g. 90 for sm_90)
whether or not its payload is compressed, so only the headers are read: a library of a
gigabyte is scanned in a fraction of a second. Layout (offsets in an entry header):
0 kind (u16), 4 header size (u32), 8 payload size (u64), 28 architecture (u32),
40 flags (u64: 0x100000 an arch-specific "a" target such as sm_90a, 0x200000 a
family-specific "f" target such as sm_100f). This is what ``cuobjdump --list-elf`` and
``--list-ptx`` print, for machines without the CUDA toolkit.
"""
from __future__ import annotations

import struct
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
KIND_PTX, KIND_CUBIN = 1, 2
FLAG_ARCH_SPECIFIC, FLAG_FAMILY_SPECIFIC = 0x100000, 0x200000
_CHUNK = 1 << 20


class NotELF(ValueError):
    """The file is not a 64-bit little-endian ELF file."""


def section(path: Path, name: str = ".nv_fatbin") -> tuple[int, int] | None:
    """(offset, size) of the named section of a 64-bit little-endian ELF file, or None."""
    with open(path, "rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise NotELF(f"{path} is not a 64-bit little-endian ELF file")
        shoff, = struct.unpack_from("<Q", header, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", header, 0x3A)
        if not shoff or not shnum or shstrndx >= shnum:
            return None
        f.seek(shoff)
        table = f.read(shentsize * shnum)
        sections = [struct.unpack_from("<IIQQQQ", table, i * shentsize) for i in range(shnum)]
        names_offset, names_size = sections[shstrndx][4], sections[shstrndx][5]
        f.seek(names_offset)
        names = f.read(names_size)
    wanted = name.encode()
    for name_at, _type, _flags, _addr, offset, size in sections:
        end = names.find(b"\0", name_at)
        if names[name_at:end] == wanted:
            return offset, size
    return None


def arch_name(kind: int, arch: int, flags: int) -> str:
    """'sm_90', 'sm_90a', 'sm_100f' for a cubin, 'compute_90' etc. for PTX."""
    suffix = "a" if flags & FLAG_ARCH_SPECIFIC else "f" if flags & FLAG_FAMILY_SPECIFIC else ""
    return f"{'compute' if kind == KIND_PTX else 'sm'}_{arch}{suffix}"


def entries(path: Path) -> list[str]:
    """Every cubin and PTX entry of the file's fatbinaries, as arch names (repeats kept out,
    sorted); [] for an ELF file without device code. NotELF for any other file."""
    found = section(path)
    if not found:
        return []
    start, size = found
    end, names = start + size, set()
    with open(path, "rb") as f:
        at = start
        while at + 16 <= end:
            f.seek(at)
            magic, _version, header_size, fat_size = struct.unpack("<IHHQ", f.read(16))
            if magic != FATBIN_MAGIC:
                at = _next_magic(f, at + 1, start, end)
                if at is None:
                    break
                continue
            entry, stop = at + header_size, min(at + header_size + fat_size, end)
            while entry + 64 <= stop:
                f.seek(entry)
                head = f.read(64)
                kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", head, 0)
                arch, = struct.unpack_from("<I", head, 28)
                flags, = struct.unpack_from("<Q", head, 40)
                if entry_header < 64 or kind not in (KIND_PTX, KIND_CUBIN, 4, 8, 16):
                    break  # not an entry header: stop reading this fatbinary
                if kind in (KIND_PTX, KIND_CUBIN):
                    names.add(arch_name(kind, arch, flags))
                entry += entry_header + payload
            at = stop
    return sorted(names, key=arch_key)


def _next_magic(f, at: int, start: int, end: int) -> int | None:
    """The offset of the next fatbinary header at or after ``at`` (8-byte aligned from the
    section's ``start``), or None."""
    magic = struct.pack("<I", FATBIN_MAGIC)
    while at < end:
        f.seek(at)
        chunk = f.read(min(_CHUNK, end - at))
        if not chunk:
            return None
        index = chunk.find(magic)
        while index >= 0 and (at + index - start) % 8:
            index = chunk.find(magic, index + 1)
        if index >= 0:
            return at + index
        at += max(len(chunk) - 3, 1)
    return None


def arch_key(name: str) -> tuple:
    """Sort key: by number, then cubins before PTX, plain before 'a'/'f'."""
    kind, _, rest = name.partition("_")
    digits = rest.rstrip("af")
    return (int(digits) if digits.isdigit() else 0, kind != "sm", rest[len(digits):])


def scan(paths) -> dict:
    """The union of the fatbinary entries of several files: {"files": [name, ...],
    "sm": [...], "ptx": [...], "errors": [...]}."""
    sm, ptx, files, errors = set(), set(), [], []
    for path in sorted(Path(p) for p in paths):
        try:
            names = entries(path)
        except (OSError, NotELF, struct.error) as error:
            errors.append(f"{path.name}: {error}")
            continue
        files.append(path.name)
        sm.update(n for n in names if n.startswith("sm_"))
        ptx.update(n for n in names if n.startswith("compute_"))
    return {"files": files, "sm": sorted(sm, key=arch_key), "ptx": sorted(ptx, key=arch_key), "errors": errors}

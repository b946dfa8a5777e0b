"""Safe names and safe saving (p2p_nb/files.py), on the real file system and
between real peers: a hostile sender chooses the name and the transfer id."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from p2p_nb import files
from p2p_nb.files import MAX_NAME_BYTES, create_part, publish, safe_file_name

from .conftest import MakePeer
from .test_transfer import listing, make_file, pair, sha

NAMES = [
    # path components
    ("../../etc/passwd", "passwd"),
    ("..\\..\\windows\\evil.bat", "evil.bat"),
    ("..", "file"),
    ("", "file"),
    # Windows devices, in every form Windows itself accepts
    ("CON", "_CON"),
    ("con .txt", "_con .txt"),
    ("Con.tar.gz", "_Con.tar.gz"),
    ("nul...", "_nul"),
    ("COM1", "_COM1"),
    ("COM0.log", "_COM0.log"),
    ("COM\u00b9", "_COM\u00b9"),
    ("com\u00b2.txt", "_com\u00b2.txt"),
    ("LPT\u00b3", "_LPT\u00b3"),
    ("CONIN$", "_CONIN$"),
    ("conout$.txt", "_conout$.txt"),
    ("console.txt", "console.txt"),
    ("COM10", "COM10"),
    # trailing dots and spaces (Windows drops them), leading dots (hidden files)
    ("report.txt. . ", "report.txt"),
    ("...hidden", "hidden"),
    (".p2p-0123.part", "p2p-0123.part"),
    # controls and format characters
    ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override
    ("a\u200bb\u200dc\ufeff.txt", "abc.txt"),  # zero-width space/joiner, BOM
    ("a\x85b\x9bc.txt", "abc.txt"),  # C1 controls
    ("a\x00b\x1b[31m.txt", "ab[31m.txt"),  # C0 controls
    ("line\u2028break.txt", "linebreak.txt"),
    ("lone\ud800surrogate.txt", "lonesurrogate.txt"),
    ('a<b>c:d"e|f?g*.txt', "abcdefg.txt"),
    # normalisation: a decomposed é becomes one character
    ("cafe\u0301.csv", "caf\u00e9.csv"),
    ("plain name (2).tar.gz", "plain name (2).tar.gz"),
]


@pytest.mark.parametrize(("hostile", "expected"), NAMES)
def test_safe_file_name(hostile: str, expected: str) -> None:
    assert safe_file_name(hostile) == expected


@pytest.mark.parametrize(
    ("stem", "ext", "kept"),
    [
        ("x", ".csv", ".csv"),
        ("日本語", ".csv", ".csv"),
        ("é", ".parquet", ".parquet"),
        ("🙂", "", ""),
        ("ab", ".tar.gz", ".gz"),
    ],
)
def test_long_names_are_cut_in_bytes_keeping_the_extension(stem: str, ext: str, kept: str) -> None:
    name = stem * 1000 + ext
    safe = safe_file_name(name)
    size = len(safe.encode("utf-8"))
    assert MAX_NAME_BYTES - 4 < size <= MAX_NAME_BYTES  # cut close to the bound, in bytes
    assert safe.endswith(kept)
    # cut on a character boundary: only whole characters of the name remain
    assert set(safe[: len(safe) - len(kept)]) <= set(stem)


def test_a_long_cjk_name_can_be_created(tmp_path: Path) -> None:
    """120 CJK characters were kept before, ~360 bytes: the save failed after
    the whole download. Every cut name must be creatable, with a (9999) too."""
    safe = safe_file_name("数据" * 200 + ".csv")
    assert safe.endswith(".csv")
    (tmp_path / safe).write_bytes(b"x")
    stem, _, ext = safe.rpartition(".")
    (tmp_path / f"{stem} (9999).{ext}").write_bytes(b"x")


def test_an_overlong_extension_is_not_kept_whole() -> None:
    safe = safe_file_name("a." + "b" * 500)
    assert len(safe.encode()) <= MAX_NAME_BYTES
    assert safe.startswith("a.bbb")


def test_a_cut_reserved_name_keeps_its_prefix_within_the_bound() -> None:
    safe = safe_file_name("con" + ".x" * 300)
    assert safe.startswith("_con.")
    assert len(safe.encode()) <= MAX_NAME_BYTES


def test_part_files_are_new_files_never_links(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "dl"
    folder.mkdir()
    tokens = iter(["planted", "dangling", "fresh"])
    monkeypatch.setattr(files.secrets, "token_hex", lambda n: next(tokens))
    (folder / ".p2p-planted.part").symlink_to(victim)
    (folder / ".p2p-dangling.part").symlink_to(tmp_path / "nowhere")
    path, fd = create_part(folder)
    with os.fdopen(fd, "wb") as f:
        f.write(b"data")
    assert path == folder / ".p2p-fresh.part"
    assert path.read_bytes() == b"data"
    assert victim.read_text() == "precious"
    assert not (tmp_path / "nowhere").exists()
    assert (folder / ".p2p-planted.part").is_symlink()
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


def test_part_names_are_ours_and_distinct(tmp_path: Path) -> None:
    names = set()
    for _ in range(50):
        path, fd = create_part(tmp_path)
        os.close(fd)
        assert path.name.startswith(".p2p-")
        assert path.name.endswith(".part")
        names.add(path.name)
    assert len(names) == 50


@pytest.mark.parametrize("hard_links", [True, False])
def test_publish_never_replaces_anything(tmp_path: Path, hard_links: bool) -> None:
    """Both ways of publishing (link(), or an O_EXCL claim then rename where
    there are no hard links) skip files, symlinks and dangling symlinks."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "data.csv").write_text("mine")
    (folder / "data (1).csv").symlink_to(victim)
    (folder / "data (2).csv").symlink_to(tmp_path / "nowhere")
    part = folder / ".p2p-x.part"
    part.write_text("theirs")
    final = publish(part, folder, "data.csv", hard_links=hard_links)
    assert final == folder / "data (3).csv"
    assert final.read_text() == "theirs"
    assert not part.exists()
    assert (folder / "data.csv").read_text() == "mine"
    assert (folder / "data (1).csv").is_symlink()
    assert (folder / "data (2).csv").is_symlink()
    assert victim.read_text() == "precious"
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("hard_links", [True, False])
def test_publish_many_at_once_gives_distinct_names(tmp_path: Path, hard_links: bool) -> None:
    parts = []
    for i in range(20):
        p = tmp_path / f".p2p-{i}.part"
        p.write_text(str(i))
        parts.append(p)
    finals = [publish(p, tmp_path, "same.txt", hard_links=hard_links) for p in parts]
    assert len(set(finals)) == 20
    assert sorted(f.read_text() for f in finals) == sorted(str(i) for i in range(20))
    assert listing(tmp_path) == sorted(f.name for f in finals)


# ------------------------------------------------------------ between real peers


@pytest.mark.anyio
async def test_a_dangling_symlink_at_the_final_name_is_not_followed(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 20)
    folder = tmp_path / "b"
    folder.mkdir()
    target = tmp_path / "outside" / "planted.csv"
    target.parent.mkdir()
    (folder / "data.csv").symlink_to(target)  # dangling: its target does not exist
    src = tmp_path / "data.csv"
    digest = make_file(src, 5000)
    got = b.events("file_received")
    await a.share_file(src)
    rec = (await got.get(timeout=10)).data
    assert rec.path == folder / "data (1).csv"
    assert sha(rec.path) == digest
    assert not rec.path.is_symlink()
    assert (folder / "data.csv").is_symlink()
    assert not target.exists()  # nothing was written through the link


@pytest.mark.anyio
async def test_a_symlink_at_the_sender_chosen_part_name_is_not_followed(
    make_peer: MakePeer, tmp_path: Path
) -> None:
    """The part file used to be ``.p2p-<transfer id>.part``, the id chosen by
    the sender: a link planted there made us write through it."""
    a, b = await pair(make_peer, tmp_path)
    folder = tmp_path / "b"
    folder.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    src = tmp_path / "payload.bin"
    digest = make_file(src, 300_000)
    offers, got = b.events("file_offer"), b.events("file_received")
    await a.share_file(src)
    offer = (await offers.get(timeout=10)).data
    (folder / f".p2p-{offer.id}.part").symlink_to(victim)
    await offer.accept()
    rec = (await got.get(timeout=30)).data
    assert sha(rec.path) == digest
    assert victim.read_text() == "precious"
    assert (folder / f".p2p-{offer.id}.part").is_symlink()
    assert listing(folder) == sorted([f".p2p-{offer.id}.part", "payload.bin"])


@pytest.mark.anyio
async def test_hostile_unicode_names_arrive_cleaned(make_peer: MakePeer, tmp_path: Path) -> None:
    a, b = await pair(make_peer, tmp_path, auto_accept_max_bytes=1 << 20)
    src = tmp_path / "innocent.txt"
    src.write_bytes(b"hello")
    hostile = {
        "數據" * 150 + ".csv": None,
        "invoice\u202etxt.exe": "invoicetxt.exe",
        "COM\u00b9": "_COM\u00b9",
        "con .txt": "_con .txt",
        "CONIN$": "_CONIN$",
        "zero\u200bwidth.txt": "zerowidth.txt",
    }
    got = b.events("file_received")
    for name in hostile:
        await a.share_file(src, name=name)
    saved = [(await got.get(timeout=10)).data.path for _ in hostile]
    for path in saved:
        assert path.parent == tmp_path / "b"
        assert path.read_bytes() == b"hello"
        assert len(path.name.encode()) <= MAX_NAME_BYTES
    names = {p.name for p in saved}
    assert {v for v in hostile.values() if v is not None} <= names
    cjk = [n for n in names if n.startswith("數據")]
    assert len(cjk) == 1
    assert cjk[0].endswith(".csv")

//! `.deb` files crafted to escape the staging tree or lie about sizes. Each asserts the
//! specific error and that a canary directory next to the staging tree is untouched.

use std::path::PathBuf;

use package_resolver::deb::{DebError, EntryKind, UnpackDir, UnpackOptions};

use crate::support::{RawEntry, ar, control_tar, deb, deb_raw_data, raw_tar, tree, xz};

struct Sandbox {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    canary: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let canary = tmp.path().join("canary");
        std::fs::create_dir(&canary).unwrap();
        std::fs::write(canary.join("file"), b"canary").unwrap();
        Self {
            root,
            canary,
            _tmp: tmp,
        }
    }

    fn write_deb(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.parent().unwrap().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn assert_canary_intact(&self) {
        assert_eq!(tree(&self.canary), ["file"]);
        assert_eq!(std::fs::read(self.canary.join("file")).unwrap(), b"canary");
        let parent: Vec<String> = tree(self.root.parent().unwrap())
            .into_iter()
            .filter(|p| !p.starts_with("root") && !p.starts_with("canary") && !p.ends_with(".deb"))
            .collect();
        assert!(
            parent.is_empty(),
            "unexpected files next to the staging tree: {parent:?}"
        );
    }
}

fn unpack(sb: &Sandbox, staging: &mut UnpackDir, bytes: &[u8]) -> Result<(), DebError> {
    let p = sb.write_deb("x.deb", bytes);
    staging
        .unpack_deb(&p, &UnpackOptions::default())
        .map(|_| ())
}

fn unpack_one(bytes: &[u8]) -> (Sandbox, Result<(), DebError>) {
    let sb = Sandbox::new();
    let mut staging = UnpackDir::new(&sb.root).unwrap();
    let r = unpack(&sb, &mut staging, bytes);
    (sb, r)
}

fn inner(r: Result<(), DebError>) -> DebError {
    match r {
        Ok(()) => panic!("malicious .deb was accepted"),
        Err(DebError::InFile { deb, source }) => {
            assert!(deb.ends_with("x.deb"));
            *source
        }
        Err(other) => panic!("error without the file: {other:?}"),
    }
}

#[test]
fn dotdot_traversal() {
    let (sb, r) = unpack_one(&deb(
        "evil",
        "1",
        &[],
        &[RawEntry::file("./../canary/pwned", b"x", 0o644)],
    ));
    assert!(matches!(inner(r), DebError::PathTraversal { .. }));
    sb.assert_canary_intact();
}

#[test]
fn absolute_path() {
    let sb = Sandbox::new();
    let target = format!("{}/pwned", sb.canary.display());
    let mut staging = UnpackDir::new(&sb.root).unwrap();
    let r = unpack(
        &sb,
        &mut staging,
        &deb("evil", "1", &[], &[RawEntry::file(&target, b"x", 0o644)]),
    );
    assert!(matches!(inner(r), DebError::AbsolutePath { .. }));
    sb.assert_canary_intact();
}

#[test]
fn write_through_symlink_same_package() {
    let sb = Sandbox::new();
    let mut staging = UnpackDir::new(&sb.root).unwrap();
    let r = unpack(
        &sb,
        &mut staging,
        &deb(
            "evil",
            "1",
            &[],
            &[
                RawEntry::symlink("./escape", "../canary"),
                RawEntry::file("./escape/pwned", b"x", 0o644),
            ],
        ),
    );
    assert!(matches!(inner(r), DebError::PathThroughSymlink { .. }));
    sb.assert_canary_intact();
}

#[test]
fn write_through_symlink_of_earlier_package() {
    let sb = Sandbox::new();
    let canary = sb.canary.display().to_string();
    let mut staging = UnpackDir::new(&sb.root).unwrap();
    unpack(
        &sb,
        &mut staging,
        &deb("first", "1", &[], &[RawEntry::symlink("./etc", &canary)]),
    )
    .unwrap();
    let r = unpack(
        &sb,
        &mut staging,
        &deb(
            "second",
            "1",
            &[],
            &[RawEntry::file("./etc/pwned", b"x", 0o644)],
        ),
    );
    assert!(matches!(inner(r), DebError::PathThroughSymlink { .. }));
    sb.assert_canary_intact();
}

#[test]
fn replacing_a_symlink_does_not_follow_it() {
    // A later package shipping a *file* where an earlier one shipped a symlink replaces the
    // link; it must not write into the link's target.
    let sb = Sandbox::new();
    let target = sb.canary.join("file").display().to_string();
    let mut staging = UnpackDir::new(&sb.root).unwrap();
    unpack(
        &sb,
        &mut staging,
        &deb("first", "1", &[], &[RawEntry::symlink("./x", &target)]),
    )
    .unwrap();
    unpack(
        &sb,
        &mut staging,
        &deb("second", "1", &[], &[RawEntry::file("./x", b"new", 0o644)]),
    )
    .unwrap();
    assert_eq!(std::fs::read(sb.root.join("x")).unwrap(), b"new");
    assert_eq!(staging.overlaps().len(), 1);
    assert_eq!(staging.overlaps()[0].first, "first");
    sb.assert_canary_intact();
}

#[test]
fn hard_link_outside() {
    let (sb, r) = unpack_one(&deb(
        "evil",
        "1",
        &[],
        &[RawEntry::hardlink("./x", "../canary/file")],
    ));
    assert!(matches!(inner(r), DebError::HardLinkTarget { .. }));
    sb.assert_canary_intact();
}

#[test]
fn hard_link_to_absent_target() {
    let (sb, r) = unpack_one(&deb(
        "evil",
        "1",
        &[],
        &[RawEntry::hardlink("./x", "./nothing")],
    ));
    assert!(matches!(inner(r), DebError::HardLinkTarget { .. }));
    sb.assert_canary_intact();
}

#[test]
fn lying_size() {
    let mut e = RawEntry::file("./big", &[7u8; 100], 0o644);
    e.declared_size = Some(1_000_000);
    let mut data = raw_tar(&[e]);
    data.truncate(512 + 100);
    let (sb, r) = unpack_one(&deb_raw_data("evil", &data));
    let err = inner(r);
    assert!(
        matches!(
            err,
            DebError::LyingSize {
                declared: 1_000_000,
                ..
            }
        ),
        "{err:?}"
    );
    sb.assert_canary_intact();
}

#[test]
fn truncated_archive() {
    let bytes = deb("t", "1", &[], &[RawEntry::file("./a", &[1u8; 5000], 0o644)]);
    let (sb, r) = unpack_one(&bytes[..bytes.len() - 40]);
    assert!(matches!(inner(r), DebError::ArMemberTooLarge { .. }));
    sb.assert_canary_intact();

    // A consistent ar whose xz stream is cut short.
    let data = xz(&raw_tar(&[RawEntry::file("./a", &[1u8; 5000], 0o644)]));
    let cut = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control_tar("t", "1", &[])),
        ("data.tar.xz", &data[..data.len() / 2]),
    ]);
    let (sb, r) = unpack_one(&cut);
    assert!(matches!(
        inner(r),
        DebError::Corrupt { .. } | DebError::LyingSize { .. }
    ));
    sb.assert_canary_intact();
}

#[test]
fn unsupported_entry_and_oversized_control() {
    let (_, r) = unpack_one(&deb(
        "t",
        "1",
        &[],
        &[RawEntry::new(
            "./s",
            tar::EntryType::new(b'Z'),
            b"",
            None,
            0o644,
        )],
    ));
    assert!(matches!(inner(r), DebError::UnsupportedEntry { .. }));

    let sb = Sandbox::new();
    let mut staging = UnpackDir::new(&sb.root).unwrap();
    let big = "x".repeat(2000);
    let p = sb.write_deb("x.deb", &deb("t", "1", &[("postinst", &big)], &[]));
    let err = staging
        .unpack_deb(
            &p,
            &UnpackOptions {
                max_control_member: 1000,
                ..UnpackOptions::default()
            },
        )
        .unwrap_err();
    assert!(matches!(
        err.innermost(),
        DebError::ControlMemberTooLarge { .. }
    ));
}

#[test]
fn devices_recorded_not_created_and_usrmerge() {
    let sb = Sandbox::new();
    let mut staging = UnpackDir::new(&sb.root).unwrap();
    unpack(
        &sb,
        &mut staging,
        &deb(
            "base",
            "1",
            &[],
            &[
                RawEntry::dir("./"),
                RawEntry::dir("./bin/"),
                RawEntry::file("./bin/sh", b"#!", 0o755),
                RawEntry::hardlink("./bin/sh2", "./bin/sh"),
                RawEntry::dir("./dev/"),
                RawEntry::new("./dev/null", tar::EntryType::Char, b"", None, 0o666),
                RawEntry::new("./dev/fifo", tar::EntryType::Fifo, b"", None, 0o600),
                RawEntry::symlink("./lib64", "usr/lib64"),
            ],
        ),
    )
    .unwrap();
    let m = staging.manifest();
    assert_eq!(m["usr/bin/sh"].kind, EntryKind::File);
    assert_eq!(
        m["usr/bin/sh2"].kind,
        EntryKind::HardLink {
            target: "usr/bin/sh".into()
        }
    );
    assert_eq!(
        m["dev/null"].kind,
        EntryKind::CharDev { major: 1, minor: 3 }
    );
    assert_eq!(m["dev/fifo"].kind, EntryKind::Fifo);
    assert!(matches!(m["lib64"].kind, EntryKind::Symlink { .. }));
    assert!(!sb.root.join("dev/null").exists());
    assert!(!sb.root.join("bin").exists());
    assert_eq!(std::fs::read(sb.root.join("usr/bin/sh2")).unwrap(), b"#!");
    let report = &staging.packages()[0];
    assert_eq!(report.files, 5);
    assert_eq!(report.bytes, 2);

    // A directory where a file already is: specific error.
    let r = unpack(
        &sb,
        &mut staging,
        &deb("c", "1", &[], &[RawEntry::dir("./usr/bin/sh/")]),
    );
    assert!(matches!(inner(r), DebError::TypeConflict { .. }));
}

#[test]
fn not_a_deb() {
    let (_, r) = unpack_one(b"PK\x03\x04 zip file");
    assert!(matches!(inner(r), DebError::NotAr));
    let (_, r) = unpack_one(&ar(&[("debian-binary", b"3.0\n")]));
    assert!(matches!(inner(r), DebError::FormatVersion(_)));
    let (_, r) = unpack_one(&ar(&[("control.tar", b"")]));
    assert!(matches!(inner(r), DebError::UnexpectedMember { .. }));
    let (_, r) = unpack_one(&ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.bz2", b""),
    ]));
    assert!(matches!(inner(r), DebError::UnsupportedCompression(_)));
}

/// Deterministic mutation smoke test (the `deb_unpack` fuzz target does this at scale):
/// flipped bytes anywhere in a valid `.deb` give an error or a clean unpack, never a panic
/// or a write outside the staging tree.
#[test]
fn mutated_debs_never_escape() {
    let base = deb(
        "m",
        "1",
        &[("postinst", "#!/bin/sh\n")],
        &[
            RawEntry::dir("./usr/"),
            RawEntry::file("./usr/a", &[3u8; 700], 0o644),
            RawEntry::symlink("./usr/l", "a"),
            RawEntry::hardlink("./usr/h", "./usr/a"),
        ],
    );
    let plain = deb_raw_data(
        "p",
        &raw_tar(&[
            RawEntry::dir("./etc/"),
            RawEntry::file("./etc/x", b"hello", 0o600),
        ]),
    );
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..400 {
        let mut bytes = if round % 2 == 0 {
            base.clone()
        } else {
            plain.clone()
        };
        for _ in 0..1 + round % 4 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let i = (seed % bytes.len() as u64) as usize;
            bytes[i] = (seed >> 32) as u8;
        }
        let sb = Sandbox::new();
        let mut staging = UnpackDir::new(&sb.root).unwrap();
        let _ = unpack(&sb, &mut staging, &bytes);
        sb.assert_canary_intact();
    }
}

#[test]
fn zstd_and_uncompressed_members() {
    let data = raw_tar(&[
        RawEntry::dir("./usr/"),
        RawEntry::file("./usr/z", b"zstd data", 0o644),
    ]);
    let zst =
        ruzstd::encoding::compress_to_vec(&data[..], ruzstd::encoding::CompressionLevel::Fastest);
    let bytes = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar", &control_tar("z", "1", &[])),
        ("data.tar.zst", &zst),
    ]);
    let (sb, r) = unpack_one(&bytes);
    r.unwrap();
    assert_eq!(std::fs::read(sb.root.join("usr/z")).unwrap(), b"zstd data");
}

#[test]
fn data_size_cap() {
    let sb = Sandbox::new();
    let mut staging = UnpackDir::new(&sb.root).unwrap();
    let p = sb.write_deb(
        "x.deb",
        &deb(
            "big",
            "1",
            &[],
            &[RawEntry::file("./a", &[0u8; 40_000], 0o644)],
        ),
    );
    let err = staging
        .unpack_deb(
            &p,
            &UnpackOptions {
                max_data_bytes: 10_000,
                ..UnpackOptions::default()
            },
        )
        .unwrap_err();
    assert!(
        matches!(err.innermost(), DebError::DataTooLarge { limit: 10_000 }),
        "{err:?}"
    );
    sb.assert_canary_intact();
}

/// Issue #8: unpacking onto a full disk said "member `…` is truncated or corrupt", blaming
/// a package that is fine.
#[test]
fn issue_8_unpacking_onto_a_full_disk_is_no_space_not_corrupt() {
    let Some(full) = crate::support::SmallFs::mount(1024 * 1024) else {
        return;
    };
    let payload = crate::support::noise(3 * 1024 * 1024);
    let bytes = deb(
        "big",
        "1.0",
        &[],
        &[
            RawEntry::dir("./"),
            RawEntry::dir("./usr/"),
            RawEntry::file("./usr/big", &payload, 0o644),
        ],
    );
    let debs = tempfile::tempdir().unwrap();
    let path = debs.path().join("big.deb");
    std::fs::write(&path, bytes).unwrap();
    let mut staging = UnpackDir::new(&full.path().join("root")).unwrap();
    let err = staging
        .unpack_deb(&path, &UnpackOptions::default())
        .map(|_| ())
        .unwrap_err();
    let inner = err.innermost();
    assert!(matches!(inner, DebError::NoSpace { .. }), "{err:?}");
    assert!(
        inner
            .to_string()
            .starts_with("no space left on the device holding `"),
        "{inner}"
    );
}

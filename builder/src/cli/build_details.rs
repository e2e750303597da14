//! `jeos build --verbose`: what each step did (counts, sizes, cache use), from the build
//! report and the UI's download counters, printed after the step timings.

use crate::pipeline::BuildReport;
use crate::progress::{format_bytes, step_title};

/// Downloads of the run, as the UI counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Downloads {
    /// Files fetched over the network.
    pub files: u64,
    /// Bytes fetched.
    pub bytes: u64,
}

/// `(step title, what it did)` for every step of `report` that has something to say, in
/// step order.
pub(super) fn step_details(report: &BuildReport, downloads: Downloads) -> Vec<(String, String)> {
    report
        .steps
        .iter()
        .filter_map(|step| {
            Some((
                step_title(&step.name),
                detail(&step.name, report, downloads)?,
            ))
        })
        .collect()
}

fn detail(step: &str, report: &BuildReport, downloads: Downloads) -> Option<String> {
    let unpacked: u64 = report.packages.iter().map(|p| p.bytes).sum();
    let files: u64 = report.packages.iter().map(|p| p.files).sum();
    Some(match step {
        "fetch_packages" => {
            if downloads.files == 0 {
                "every file from the cache (no download)".to_owned()
            } else {
                format!(
                    "{} downloaded ({}), the rest from the cache",
                    plural(downloads.files, "file"),
                    format_bytes(downloads.bytes)
                )
            }
        }
        "unpack_rootfs" => format!(
            "{}, {}, {} unpacked",
            plural(report.packages.len() as u64, "package"),
            plural(files, "file"),
            format_bytes(unpacked)
        ),
        "unpack_kernel" => format!("kernel {}", report.kernel),
        "customize_rootfs" => {
            let pruned: u64 = report.pruned.values().sum();
            let categories: Vec<String> = report
                .pruned
                .iter()
                .filter(|(_, bytes)| **bytes > 0)
                .map(|(name, bytes)| format!("{name} {}", format_bytes(*bytes)))
                .collect();
            let mut text = format!("pruned {}", format_bytes(pruned));
            if !categories.is_empty() {
                text.push_str(&format!(" ({})", categories.join(", ")));
            }
            text.push_str(&format!(
                "; {} package files replaced by the recipe; {} maintainer scripts reproduced; {}",
                report.overwrites.len(),
                report
                    .maintainer_scripts
                    .values()
                    .map(Vec::len)
                    .sum::<usize>(),
                plural(report.notes.len() as u64, "note")
            ));
            text
        }
        "build_initramfs" => format!(
            "{} modules, {} compressed",
            report.modules.len(),
            format_bytes(report.initramfs_bytes)
        ),
        "write_disk" => format!(
            "{} disk (root file system {}, ESP {})",
            format_bytes(report.image_bytes),
            format_bytes(report.root_fs_bytes),
            format_bytes(report.esp_bytes)
        ),
        "publish_formats" => {
            let published = report.published.as_ref()?;
            let files: Vec<String> = published
                .files
                .iter()
                .map(|f| {
                    let name = f.path.file_name().map_or_else(
                        || f.path.display().to_string(),
                        |n| n.to_string_lossy().into_owned(),
                    );
                    format!("{name} {}", format_bytes(f.size_bytes))
                })
                .collect();
            files.join(", ")
        }
        _ => return None,
    })
}

fn plural(n: u64, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use super::*;
    use crate::pipeline::{PackageBytes, StepReport};

    fn report() -> BuildReport {
        let step = |name: &str| StepReport {
            name: name.into(),
            seconds: 1.0,
            cached: false,
        };
        BuildReport {
            name: "demo".into(),
            version: "1.0".into(),
            output: PathBuf::from("dist/demo-1.0"),
            raw_image: PathBuf::from("dist/demo-1.0/demo-1.0.raw"),
            image_bytes: 128 << 20,
            root_fs_bytes: 60 << 20,
            esp_bytes: 32 << 20,
            kernel: "6.12.0-1-cloud-amd64".into(),
            modules: vec!["virtio_blk".into(), "ext4".into()],
            initramfs_bytes: 2 << 20,
            packages: vec![PackageBytes {
                name: "hello".into(),
                version: "1".into(),
                bytes: 1 << 20,
                files: 12,
            }],
            pruned: BTreeMap::from([("docs".to_owned(), 4096), ("man".to_owned(), 0)]),
            maintainer_scripts: BTreeMap::new(),
            overlaps: vec![],
            overwrites: vec!["/etc/x (hello)".into()],
            notes: vec![],
            source_date_epoch: 0,
            cmdline: String::new(),
            steps: [
                "fetch_packages",
                "unpack_rootfs",
                "install_init",
                "write_disk",
            ]
            .map(step)
            .to_vec(),
            published: None,
        }
    }

    #[test]
    fn each_step_says_what_it_did() {
        let details = step_details(
            &report(),
            Downloads {
                files: 3,
                bytes: 3 << 20,
            },
        );
        let titles: Vec<&str> = details.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(titles, ["fetch packages", "unpack rootfs", "write disk"]);
        assert!(
            details[0].1.starts_with("3 files downloaded ("),
            "{details:?}"
        );
        assert!(
            details[0].1.ends_with("the rest from the cache"),
            "{details:?}"
        );
        assert!(
            details[1].1.starts_with("1 package, 12 files, "),
            "{details:?}"
        );
        assert!(details[2].1.contains("root file system"), "{details:?}");
        let cached = step_details(&report(), Downloads::default());
        assert_eq!(cached[0].1, "every file from the cache (no download)");
    }
}

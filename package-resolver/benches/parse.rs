//! Index parsing and solving speed.
//!
//! `JEOS_BENCH_PACKAGES=/path/to/Packages` (a decompressed `binary-amd64/Packages`, e.g.
//! trixie main) measures the real index and solves `nginx` and `redis-server` on it.
//! Without it, a synthetic index of 64,000 stanzas of realistic shape is generated.
//!
//! Target: parsing the real trixie main amd64 index (~57 MB) in ≤ 1.5 s.
//!
//! ```text
//! JEOS_BENCH_PACKAGES=$PWD/Packages cargo bench -p package-resolver --bench parse
//! ```

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use package_resolver::packages::PackageIndex;
use package_resolver::solver::{SolveRequest, solve};

/// A synthetic index: `count` packages, each depending on a few earlier ones, with
/// provides, multi-line descriptions and the usual unused fields.
fn synthetic(count: usize) -> String {
    let mut text = String::with_capacity(count * 900);
    for i in 0..count {
        let deps: Vec<String> = [i / 2, i / 3, i / 5]
            .iter()
            .filter(|&&d| d < i)
            .map(|d| format!("pkg{d} (>= 1.{})", d % 7))
            .collect();
        text.push_str(&format!(
            "Package: pkg{i}\nSource: src{s}\nVersion: 1.{v}-{r}+deb13u1\nInstalled-Size: {size}\n\
             Maintainer: Debian Example <example@lists.debian.org>\nArchitecture: amd64\n\
             Multi-Arch: foreign\n",
            s = i / 3,
            v = i % 7,
            r = i % 4 + 1,
            size = 10 + i % 5000,
        ));
        if !deps.is_empty() {
            text.push_str(&format!("Depends: {} | virt{}\n", deps.join(", "), i % 50));
        }
        if i % 10 == 0 {
            text.push_str(&format!("Provides: virt{}\n", i % 50));
        }
        text.push_str(&format!(
            "Description: synthetic package number {i}\n A longer description that\n spans lines.\n"
        ));
        text.push_str(
            "Homepage: https://example.org/\nDescription-md5: 0123456789abcdef0123456789abcdef\n\
             Tag: devel::library, role::shared-lib\nSection: libs\nPriority: optional\n",
        );
        text.push_str(&format!(
            "Filename: pool/main/p/pkg{i}/pkg{i}_1.0_amd64.deb\nSize: {}\n\
             MD5sum: 0123456789abcdef0123456789abcdef\n\
             SHA256: {:064x}\n\n",
            1000 + i,
            i
        ));
    }
    text
}

fn bench(c: &mut Criterion) {
    let (label, text) = match std::env::var_os("JEOS_BENCH_PACKAGES") {
        Some(path) => (
            "real",
            std::fs::read_to_string(&path).expect("JEOS_BENCH_PACKAGES is readable UTF-8"),
        ),
        None => ("synthetic", synthetic(64_000)),
    };
    let mut group = c.benchmark_group("packages");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function(format!("parse_{label}"), |b| {
        b.iter(|| PackageIndex::parse(&[black_box(text.as_str())], "amd64").expect("parses"));
    });
    group.finish();

    let index = PackageIndex::parse(&[text.as_str()], "amd64").expect("parses");
    let roots: &[&str] = if label == "real" {
        &["nginx", "redis-server"]
    } else {
        &["pkg63999"]
    };
    let mut group = c.benchmark_group("solve");
    group.sample_size(10);
    for root in roots {
        let request = SolveRequest {
            install: vec![(*root).to_owned()],
            arch: "amd64".into(),
            ..SolveRequest::default()
        };
        group.bench_function(format!("{label}_{root}"), |b| {
            b.iter(|| solve(&index, black_box(&request)).expect("solves"));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

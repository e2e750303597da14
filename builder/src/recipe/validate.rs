//! `RecipeFile` -> `Recipe`: every semantic rule of the schema, collecting all problems.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{RecipeError, RecipeErrorKind as K, RecipeErrors};
use super::names::{self, AppName};
use super::raw::{self, Scalar, Spanned, Str};
use super::size::{ByteSize, SizeError};
use super::*;

/// Set to `1` to let a recipe name host files outside its own directory.
pub const ALLOW_OUTSIDE_ENV: &str = "JEOS_ALLOW_HOST_PATHS";

#[path = "task.rs"]
mod task;

/// Users that Debian's base-passwd creates in every system.
const BASE_USERS: [&str; 18] = [
    "root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy",
    "www-data", "backup", "list", "irc", "_apt", "nobody",
];

/// Groups that Debian's base-passwd creates in every system.
const BASE_GROUPS: [&str; 38] = [
    "root", "daemon", "bin", "sys", "adm", "tty", "disk", "lp", "mail", "news", "uucp", "man",
    "proxy", "kmem", "dialout", "fax", "voice", "cdrom", "floppy", "tape", "sudo", "audio", "dip",
    "www-data", "backup", "operator", "list", "irc", "src", "shadow", "utmp", "video", "sasl",
    "plugdev", "staff", "games", "users", "nogroup",
];

/// Default readiness timeout.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `[test] timeout`.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Smallest memory a Debian kernel plus guest-init boots in comfortably.
const MIN_MEMORY: ByteSize = ByteSize::mib(64);
/// Smallest explicit disk size: ESP plus a minimal ext4.
const MIN_DISK: ByteSize = ByteSize::mib(16);

pub(super) fn parse_and_validate(
    name: &str,
    text: &Arc<str>,
    base_dir: Option<&Path>,
) -> Result<Recipe, RecipeErrors> {
    let mut ctx = Ctx {
        name,
        text,
        base_dir,
        errors: Vec::new(),
    };
    let recipe = match toml::from_str::<raw::RecipeFile>(text) {
        Ok(file) => Some(ctx.recipe(file)),
        Err(err) => {
            ctx.structural_errors(&err);
            None
        }
    };
    match recipe {
        Some(recipe) if ctx.errors.is_empty() => Ok(recipe),
        _ => {
            ctx.errors.sort_by_key(|e| e.span.start);
            Err(RecipeErrors {
                name: name.to_owned(),
                errors: ctx.errors,
            })
        }
    }
}

struct Ctx<'a> {
    name: &'a str,
    text: &'a Arc<str>,
    base_dir: Option<&'a Path>,
    errors: Vec<RecipeError>,
}

fn span<T>(value: &Spanned<T>) -> Range<usize> {
    value.span()
}

/// Shortens long values quoted in headlines.
fn shown(value: &str) -> String {
    let mut out: String = value.chars().take(40).collect();
    if out.len() < value.len() {
        out.push('…');
    }
    out.replace('\n', "\\n")
}

/// Splits `` `a`, `b` `` lists out of serde messages.
fn backticked_words(text: &str) -> Vec<String> {
    text.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.to_owned())
        .collect()
}

fn friendly_type(text: &str) -> String {
    let text = text.trim();
    match text {
        "i64" | "u64" | "i32" | "u32" | "u16" | "u8" => "an integer".into(),
        "a sequence" | "sequence" => "an array".into(),
        "map" | "a map" => "a table".into(),
        "a boolean" | "boolean" => "a boolean".into(),
        "a string" => "a string".into(),
        _ if text.starts_with("struct ") => "a table".into(),
        _ if text.starts_with("a sequence") => "an array".into(),
        _ => text.into(),
    }
}

impl Ctx<'_> {
    fn push(&mut self, kind: K, span: Range<usize>) {
        self.errors
            .push(RecipeError::new(kind, span, self.name, self.text));
    }

    /// Every syntax, unknown-key, type and missing-key problem (the linter), plus the
    /// semantic problems of what remains once the offending entries are left out.
    fn structural_errors(&mut self, err: &toml::de::Error) {
        let lint = super::lint::lint_structure(self.text);
        if lint.findings.is_empty() {
            // The schema walk and serde disagree: still report serde's problem.
            self.toml_error(err);
            return;
        }
        for finding in lint.findings {
            self.push(finding.kind, finding.span);
        }
        if let Some(repaired) = lint.repaired
            && let Ok(file) = toml::from_str::<raw::RecipeFile>(&repaired)
        {
            let _ = self.recipe(file);
        }
    }

    fn toml_error(&mut self, err: &toml::de::Error) {
        let span = err.span().unwrap_or(0..0);
        let message = err.message().trim().to_owned();
        let kind = if let Some(rest) = message.strip_prefix("unknown field ") {
            let mut words = backticked_words(rest);
            let key = if words.is_empty() {
                String::new()
            } else {
                words.remove(0)
            };
            K::UnknownKey {
                key,
                expected: words,
            }
        } else if let Some(rest) = message.strip_prefix("missing field ") {
            K::MissingKey {
                key: backticked_words(rest)
                    .into_iter()
                    .next()
                    .unwrap_or_default(),
            }
        } else if let Some(rest) = message.strip_prefix("invalid type: ") {
            match rest.rsplit_once(", expected ") {
                Some((found, expected)) => K::WrongType {
                    key: String::new(),
                    expected: friendly_type(expected),
                    found: friendly_type(found),
                },
                None => K::Syntax { message },
            }
        } else {
            K::Syntax {
                message: message.lines().next().unwrap_or_default().to_owned(),
            }
        };
        self.push(kind, span);
    }

    fn invalid(&mut self, key: &str, value: &Str, reason: &str, hint: Option<String>) {
        self.push(
            K::Invalid {
                key: key.into(),
                value: shown(value.get_ref()),
                reason: reason.into(),
                hint,
            },
            span(value),
        );
    }

    /// Applies a name rule; returns the value when it passes.
    fn checked(
        &mut self,
        key: &str,
        value: &Str,
        rule: fn(&str) -> Result<(), &'static str>,
    ) -> Option<String> {
        match rule(value.get_ref()) {
            Ok(()) => Some(value.get_ref().clone()),
            Err(reason) => {
                self.invalid(key, value, reason, None);
                None
            }
        }
    }

    fn choice<T: Copy>(
        &mut self,
        what: &'static str,
        value: &Str,
        choices: &[(&'static str, T)],
    ) -> Option<T> {
        let found = choices.iter().find(|(n, _)| n == value.get_ref());
        if found.is_none() {
            self.push(
                K::UnknownChoice {
                    what,
                    value: shown(value.get_ref()),
                    choices: choices.iter().map(|(n, _)| *n).collect(),
                },
                span(value),
            );
        }
        found.map(|(_, v)| *v)
    }

    fn size(&mut self, key: &str, value: &Spanned<Scalar>) -> Option<ByteSize> {
        let (shown_value, result) = match value.get_ref() {
            Scalar::Integer(n) => (n.to_string(), ByteSize::from_integer(*n)),
            Scalar::String(s) => (shown(s), ByteSize::parse(s)),
        };
        match result {
            Ok(size) => Some(size),
            Err(err) => {
                let suggestion = match &err {
                    SizeError::Unit { suggestion } => suggestion.clone(),
                    SizeError::Overflow | SizeError::Negative => None,
                };
                self.push(
                    K::InvalidSize {
                        key: key.into(),
                        value: shown_value,
                        reason: err.to_string(),
                        suggestion,
                    },
                    span(value),
                );
                None
            }
        }
    }

    fn integer_in<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        value: &Spanned<i64>,
        range: Range<i64>,
        reason: &str,
    ) -> Option<T> {
        let n = *value.get_ref();
        match T::try_from(n) {
            Ok(v) if range.contains(&n) => Some(v),
            _ => {
                self.push(
                    K::Invalid {
                        key: key.into(),
                        value: n.to_string(),
                        reason: reason.into(),
                        hint: None,
                    },
                    span(value),
                );
                None
            }
        }
    }

    fn port(&mut self, key: &str, value: &Spanned<i64>) -> Option<u16> {
        self.integer_in(
            key,
            value,
            1..65536,
            "expected a TCP port between 1 and 65535",
        )
    }

    fn duration(&mut self, key: &str, value: &Spanned<Scalar>) -> Option<Duration> {
        let parsed = match value.get_ref() {
            Scalar::Integer(n) => u64::try_from(*n).ok().map(Duration::from_secs),
            Scalar::String(s) => parse_duration(s),
        };
        let parsed = parsed.filter(|d| !d.is_zero() && *d <= Duration::from_secs(86_400));
        if parsed.is_none() {
            let value_text = match value.get_ref() {
                Scalar::Integer(n) => n.to_string(),
                Scalar::String(s) => shown(s),
            };
            self.push(
                K::Invalid {
                    key: key.into(),
                    value: value_text,
                    reason: "expected a duration between 1s and 24h".into(),
                    hint: Some("write seconds as an integer (`30`) or a string like `30s`, `500ms` or `2m`".into()),
                },
                span(value),
            );
        }
        parsed
    }

    fn mode(&mut self, key: &str, value: &Spanned<Scalar>) -> Option<u32> {
        match value.get_ref() {
            Scalar::String(s) => match names::parse_mode(s) {
                Ok(mode) => Some(mode),
                Err(reason) => {
                    self.push(
                        K::Invalid {
                            key: key.into(),
                            value: shown(s),
                            reason: reason.into(),
                            hint: Some("write the mode as an octal string, like `\"0644\"`".into()),
                        },
                        span(value),
                    );
                    None
                }
            },
            Scalar::Integer(n) => {
                self.push(
                    K::Invalid {
                        key: key.into(),
                        value: n.to_string(),
                        reason: "a bare integer is decimal in TOML".into(),
                        hint: Some(format!(
                            "write the mode as an octal string, like `\"{n:04}\"`"
                        )),
                    },
                    span(value),
                );
                None
            }
        }
    }

    fn guest_path(&mut self, key: &str, value: &Str) -> Option<String> {
        match names::check_guest_path(value.get_ref()) {
            Ok(()) => Some(value.get_ref().clone()),
            Err((reason, normalized)) => {
                let hint = normalized.map(|n| format!("write `{n}`"));
                self.invalid(key, value, reason, hint);
                None
            }
        }
    }

    fn argv(&mut self, key: &str, value: &Spanned<Vec<Str>>) -> Option<Vec<String>> {
        let Some(first) = value.get_ref().first() else {
            self.push(
                K::Invalid {
                    key: key.into(),
                    value: "[]".into(),
                    reason: "the command is empty".into(),
                    hint: Some("give the program's absolute path first, then its arguments".into()),
                },
                span(value),
            );
            return None;
        };
        if !first.get_ref().starts_with('/') {
            self.invalid(
                key,
                first,
                "the program must be an absolute path",
                Some("guest-init does not search `PATH`: write e.g. `/usr/bin/...`".into()),
            );
            return None;
        }
        Some(
            value
                .get_ref()
                .iter()
                .map(|s| s.get_ref().clone())
                .collect(),
        )
    }

    /// Resolves a host path relative to the recipe and checks that it is a file.
    /// A recipe's host file (`[[file]] source`, `[ovf] eula`, `[source] keyring`), which must
    /// stay inside the recipe's directory.
    fn host_file(&mut self, key: &str, value: &Str) -> Option<PathBuf> {
        let relative = Path::new(value.get_ref());
        if value.get_ref().is_empty() {
            self.invalid(key, value, "the path is empty", None);
            return None;
        }
        let Some(base) = self.base_dir else {
            return Some(relative.to_owned());
        };
        let path = base.join(relative);
        if path.is_file() {
            // The recipe may come from someone else (CI building a pull request): a path
            // that leaves the recipe's directory, through `..`, an absolute path or a
            // symlink, would copy a host file into the image. Refused unless opted in.
            let inside = match (path.canonicalize(), base.canonicalize()) {
                (Ok(file), Ok(dir)) => file.starts_with(dir),
                _ => false,
            };
            if !inside && std::env::var_os(ALLOW_OUTSIDE_ENV).is_none_or(|v| v != "1") {
                self.invalid(
                    key,
                    value,
                    "the file is outside the recipe's directory (after resolving symlinks)",
                    Some(format!(
                        "copy it next to the recipe, or set `{ALLOW_OUTSIDE_ENV}=1` to allow host paths"
                    )),
                );
                return None;
            }
            Some(path)
        } else {
            self.push(
                K::MissingFile {
                    key: key.into(),
                    path,
                },
                span(value),
            );
            None
        }
    }

    /// Like [`Self::host_file`], also accepting a directory (`[[file]] source` copies it).
    fn host_file_or_dir(&mut self, key: &str, value: &Str) -> Option<PathBuf> {
        match self.base_dir {
            Some(base) if !value.get_ref().is_empty() && base.join(value.get_ref()).is_dir() => {
                Some(base.join(value.get_ref()))
            }
            _ => self.host_file(key, value),
        }
    }

    fn recipe(&mut self, file: raw::RecipeFile) -> Recipe {
        let appliance = self.appliance(file.appliance.get_ref());
        let source = self.source(file.source.get_ref());
        let packages = self.packages(file.packages.get_ref());
        let kernel = self.kernel(file.kernel.as_ref());
        let system = self.system(file.system.as_ref(), &appliance);
        let known_users: BTreeSet<String> = BASE_USERS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(system.users.iter().map(|u| u.name.clone()))
            .collect();
        let known_groups: BTreeSet<String> = BASE_GROUPS
            .iter()
            .map(|s| (*s).to_owned())
            .chain(system.groups.iter().map(|g| g.name.clone()))
            .chain(system.users.iter().map(|u| u.group.clone()))
            .collect();
        let accounts = Accounts {
            users: known_users,
            groups: known_groups,
        };
        self.check_user_groups(file.system.as_ref(), &accounts);
        let services = self.services(&file.service, &accounts);
        let tasks = self.tasks(&file.task, &services, &accounts);
        let vm = self.vm(file.vm.as_ref());
        let template_context = serde_json::json!({
            "appliance": {
                "name": appliance.name.as_str(),
                "version": appliance.version,
                "description": appliance.description,
                "vendor": appliance.vendor,
                "url": appliance.url,
            },
            "system": {
                "hostname": system.hostname,
                "timezone": system.timezone,
                "locale": system.locale,
            },
            "vm": { "cpus": vm.cpus, "memory_mib": vm.memory.bytes() >> 20 },
        });
        let ovf = self.ovf(file.ovf.as_ref());
        let boot_keys: BTreeSet<String> = ovf
            .properties
            .iter()
            .map(|p| p.key.clone())
            .chain(
                ovf.network_properties
                    .then_some(
                        guest_init::deploy::keys::ALL
                            .iter()
                            .map(|k| (*k).to_owned()),
                    )
                    .into_iter()
                    .flatten(),
            )
            .collect();
        let files = self.files(&file.file, &accounts, &template_context, &boot_keys);
        let directories = self.directories(&file.directory, &accounts);
        let symlinks = self.symlinks(&file.symlink);
        self.check_unique_paths(&file);
        let network = self.network(file.network.as_ref());
        let disk = self.disk(file.disk.as_ref());
        if disk.convertible {
            self.check_convertible_packages(file.packages.get_ref());
        }
        let test = self.test(file.test.as_ref(), &services);
        Recipe {
            appliance,
            source,
            packages,
            kernel,
            system,
            services,
            tasks,
            files,
            directories,
            symlinks,
            network,
            disk,
            vm,
            ovf,
            test,
        }
    }

    fn appliance(&mut self, raw: &raw::ApplianceRaw) -> Appliance {
        let name = match AppName::new(raw.name.get_ref()) {
            Ok(name) => name,
            Err(reason) => {
                self.invalid(
                    "appliance.name",
                    &raw.name,
                    reason,
                    Some("appliance names are used in file names: use `[a-z0-9][a-z0-9-]*`, at most 63 characters".into()),
                );
                AppName::new("invalid").expect("placeholder is a valid name")
            }
        };
        let version = raw.version.get_ref();
        if version.is_empty()
            || !version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_' | '~'))
        {
            self.invalid(
                "appliance.version",
                &raw.version,
                "only letters, digits and `.-+_~` are allowed",
                Some("the version is part of output file names, like `1.0.0`".into()),
            );
        }
        let url = raw
            .url
            .as_ref()
            .and_then(|u| self.checked("appliance.url", u, names::check_url));
        Appliance {
            name,
            version: version.clone(),
            description: raw.description.clone(),
            vendor: raw.vendor.clone(),
            url,
        }
    }

    fn source(&mut self, raw: &raw::SourceRaw) -> Source {
        if let Some(distribution) = &raw.distribution {
            self.choice("distribution", distribution, &[("debian", ())]);
        }
        let suites: Vec<(&'static str, &'static str)> =
            KNOWN_SUITES.iter().map(|s| (*s, *s)).collect();
        let suite = match raw.suite.get_ref().as_str() {
            alias @ ("stable" | "testing" | "unstable" | "oldstable") => {
                self.invalid(
                    "source.suite",
                    &raw.suite,
                    "suite aliases move from release to release",
                    Some(format!(
                        "name the release by its codename (one of {}), so the recipe keeps its meaning; `{alias}` is not accepted",
                        KNOWN_SUITES.map(|s| format!("`{s}`")).join(", ")
                    )),
                );
                String::new()
            }
            _ => self
                .choice("suite", &raw.suite, &suites)
                .unwrap_or_default()
                .to_owned(),
        };
        let mirror = raw
            .mirror
            .as_ref()
            .and_then(|m| self.checked("source.mirror", m, names::check_url));
        let components = match &raw.components {
            None => vec!["main".to_owned()],
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.push(
                        K::Invalid {
                            key: "source.components".into(),
                            value: "[]".into(),
                            reason: "at least one component is needed".into(),
                            hint: Some("most recipes need only `[\"main\"]`".into()),
                        },
                        span(list),
                    );
                }
                let choices: Vec<(&'static str, &'static str)> =
                    KNOWN_COMPONENTS.iter().map(|s| (*s, *s)).collect();
                let mut seen = BTreeSet::new();
                let mut out = Vec::new();
                for c in list.get_ref() {
                    if let Some(c_name) = self.choice("component", c, &choices) {
                        if !seen.insert(c_name) {
                            self.push(
                                K::Duplicate {
                                    what: "component",
                                    name: c_name.into(),
                                },
                                span(c),
                            );
                        }
                        out.push(c_name.to_owned());
                    }
                }
                out
            }
        };
        let keyring = raw
            .keyring
            .as_ref()
            .and_then(|k| self.host_file("source.keyring", k));
        let security_mirror = raw
            .security_mirror
            .as_ref()
            .and_then(|m| self.checked("source.security-mirror", m, names::check_url));
        Source {
            distribution: "debian".into(),
            suite,
            mirror,
            components,
            keyring,
            security_mirror,
            updates: raw.updates.unwrap_or(true),
            security: raw.security.unwrap_or(true),
        }
    }

    fn package_spec(&mut self, value: &Str) -> Option<PackageSpec> {
        let text = value.get_ref().trim();
        let (name, constraint) = match text.split_once('(') {
            None => (text, None),
            Some((name, rest)) => {
                let Some(inner) = rest.strip_suffix(')') else {
                    self.invalid(
                        "packages",
                        value,
                        "unclosed version constraint",
                        Some("write `name (>= version)`".into()),
                    );
                    return None;
                };
                let inner = inner.trim();
                let ops = [
                    ("<<", VersionOp::Less),
                    ("<=", VersionOp::LessOrEqual),
                    (">=", VersionOp::GreaterOrEqual),
                    (">>", VersionOp::Greater),
                    ("=", VersionOp::Equal),
                ];
                let Some((op_text, op)) = ops.iter().find(|(o, _)| inner.starts_with(o)) else {
                    self.invalid(
                        "packages",
                        value,
                        "expected a relation operator",
                        Some(
                            "operators are `<<`, `<=`, `=`, `>=` and `>>` (Debian Policy §7.1)"
                                .into(),
                        ),
                    );
                    return None;
                };
                let version = inner[op_text.len()..].trim();
                if let Err(reason) = names::check_debian_version(version) {
                    self.invalid("packages", value, reason, None);
                    return None;
                }
                (name.trim(), Some((*op, version.to_owned())))
            }
        };
        if let Err(reason) = names::check_package_name(name) {
            self.invalid(
                "packages",
                value,
                reason,
                Some("Debian package names are lowercase, like `nginx` or `libssl3`".into()),
            );
            return None;
        }
        Some(PackageSpec {
            name: name.to_owned(),
            constraint,
        })
    }

    fn package_names(&mut self, list: &[Str]) -> Vec<String> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for p in list {
            if let Some(name) = self.checked("packages", p, names::check_package_name) {
                if !seen.insert(name.clone()) {
                    self.push(
                        K::Duplicate {
                            what: "package",
                            name: name.clone(),
                        },
                        span(p),
                    );
                }
                out.push(name);
            }
        }
        out
    }

    fn packages(&mut self, raw: &raw::PackagesRaw) -> Packages {
        if raw.install.get_ref().is_empty() {
            self.push(
                K::Invalid {
                    key: "packages.install".into(),
                    value: "[]".into(),
                    reason: "nothing to install".into(),
                    hint: Some("list the packages the appliance is for, like `[\"nginx\"]`".into()),
                },
                span(&raw.install),
            );
        }
        let mut seen = BTreeSet::new();
        let mut install = Vec::new();
        for value in raw.install.get_ref() {
            if let Some(spec) = self.package_spec(value) {
                if !seen.insert(spec.name.clone()) {
                    self.push(
                        K::Duplicate {
                            what: "package",
                            name: spec.name.clone(),
                        },
                        span(value),
                    );
                }
                install.push(spec);
            }
        }
        let exclude = self.package_names(&raw.exclude);
        for (value, name) in raw.exclude.iter().zip(&exclude) {
            if seen.contains(name) {
                self.invalid(
                    "packages.exclude",
                    value,
                    "this package is also in `install`",
                    None,
                );
            }
        }
        let prefer = self.package_names(&raw.prefer);
        Packages {
            install,
            exclude,
            prefer,
        }
    }

    fn kernel(&mut self, raw: Option<&raw::KernelRaw>) -> Kernel {
        let flavours = [
            ("generic", KernelFlavour::Generic),
            ("cloud", KernelFlavour::Cloud),
        ];
        let flavour = raw
            .and_then(|k| k.flavour.as_ref())
            .and_then(|f| self.choice("kernel flavour", f, &flavours))
            .unwrap_or(KernelFlavour::Generic);
        let package = match raw.and_then(|k| k.package.as_ref()) {
            Some(p) => {
                if let Some(f) = raw.and_then(|k| k.flavour.as_ref()) {
                    self.invalid(
                        "kernel.flavour",
                        f,
                        "conflicts with `kernel.package`",
                        Some("set either `flavour` or an explicit `package`, not both".into()),
                    );
                }
                self.checked("kernel.package", p, names::check_package_name)
                    .unwrap_or_default()
            }
            None => match flavour {
                KernelFlavour::Generic => "linux-image-amd64".into(),
                KernelFlavour::Cloud => "linux-image-cloud-amd64".into(),
            },
        };
        let extra_modules = raw
            .map(|k| {
                k.extra_modules
                    .iter()
                    .filter_map(|m| {
                        self.checked("kernel.extra-modules", m, names::check_module_name)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let cmdline = raw
            .map(|k| {
                k.cmdline
                    .iter()
                    .filter_map(|arg| {
                        let ok = !arg.get_ref().is_empty()
                            && !arg
                                .get_ref()
                                .chars()
                                .any(|c| c.is_whitespace() || c.is_control() || c == '"');
                        if ok {
                            Some(arg.get_ref().clone())
                        } else {
                            self.invalid(
                                "kernel.cmdline",
                                arg,
                                "one argument per string, without spaces or quotes",
                                Some("write `cmdline = [\"quiet\", \"loglevel=3\"]`".into()),
                            );
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Kernel {
            flavour,
            package,
            extra_modules,
            cmdline,
        }
    }

    fn system(&mut self, raw: Option<&raw::SystemRaw>, appliance: &Appliance) -> System {
        let hostname = raw
            .and_then(|s| s.hostname.as_ref())
            .map(|h| {
                self.checked("system.hostname", h, names::check_hostname)
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| appliance.name.to_string());
        let timezone = raw
            .and_then(|s| s.timezone.as_ref())
            .map(|t| {
                self.checked("system.timezone", t, names::check_timezone)
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "UTC".into());
        let locale = raw
            .and_then(|s| s.locale.as_ref())
            .map(|l| {
                self.checked("system.locale", l, names::check_locale)
                    .unwrap_or_default()
            })
            .unwrap_or_else(|| "C.UTF-8".into());
        let mut groups = Vec::new();
        let mut group_names = BTreeSet::new();
        for g in raw.map(|s| s.group.as_slice()).unwrap_or_default() {
            let g = g.get_ref();
            let Some(name) = self.checked("system.group.name", &g.name, names::check_account_name)
            else {
                continue;
            };
            if !group_names.insert(name.clone()) || BASE_GROUPS.contains(&name.as_str()) {
                self.push(
                    K::Duplicate {
                        what: "group",
                        name: name.clone(),
                    },
                    span(&g.name),
                );
            }
            let gid = g.gid.as_ref().and_then(|id| {
                self.integer_in(
                    "system.group.gid",
                    id,
                    1..65534,
                    "expected an id between 1 and 65533",
                )
            });
            groups.push(Group {
                name,
                gid,
                system: g.system,
            });
        }
        let mut users = Vec::new();
        let mut user_names = BTreeSet::new();
        for u in raw.map(|s| s.user.as_slice()).unwrap_or_default() {
            let u = u.get_ref();
            let Some(name) = self.checked("system.user.name", &u.name, names::check_account_name)
            else {
                continue;
            };
            if !user_names.insert(name.clone()) || BASE_USERS.contains(&name.as_str()) {
                self.push(
                    K::Duplicate {
                        what: "user",
                        name: name.clone(),
                    },
                    span(&u.name),
                );
            }
            let uid = u.uid.as_ref().and_then(|id| {
                self.integer_in(
                    "system.user.uid",
                    id,
                    1..65534,
                    "expected an id between 1 and 65533",
                )
            });
            let group = u
                .group
                .as_ref()
                .and_then(|g| self.checked("system.user.group", g, names::check_account_name))
                .unwrap_or_else(|| name.clone());
            let groups_list = u
                .groups
                .iter()
                .filter_map(|g| self.checked("system.user.groups", g, names::check_account_name))
                .collect();
            let home = match &u.home {
                Some(h) => self.guest_path("system.user.home", h).unwrap_or_default(),
                None if u.system => "/nonexistent".into(),
                None => format!("/home/{name}"),
            };
            let shell = match &u.shell {
                Some(s) => self.guest_path("system.user.shell", s).unwrap_or_default(),
                None if u.system => "/usr/sbin/nologin".into(),
                None => "/bin/sh".into(),
            };
            users.push(User {
                name,
                uid,
                group,
                groups: groups_list,
                home,
                shell,
                system: u.system,
            });
        }
        System {
            hostname,
            timezone,
            locale,
            users,
            groups,
        }
    }

    /// Supplementary groups of users must exist (the primary group is created if needed).
    fn check_user_groups(&mut self, raw: Option<&raw::SystemRaw>, accounts: &Accounts) {
        for u in raw.map(|s| s.user.as_slice()).unwrap_or_default() {
            for g in &u.get_ref().groups {
                self.reference_group(g, accounts);
            }
        }
    }

    fn reference_user(&mut self, value: &Str, accounts: &Accounts) {
        if !accounts.users.contains(value.get_ref()) {
            self.push(
                K::UnknownReference {
                    what: "user",
                    name: shown(value.get_ref()),
                    known: accounts.users.iter().cloned().collect(),
                    hint: Some(
                        "package maintainer scripts do not run in jeos: declare the account with `[[system.user]]`"
                            .into(),
                    ),
                },
                span(value),
            );
        }
    }

    fn reference_group(&mut self, value: &Str, accounts: &Accounts) {
        if !accounts.groups.contains(value.get_ref()) {
            self.push(
                K::UnknownReference {
                    what: "group",
                    name: shown(value.get_ref()),
                    known: accounts.groups.iter().cloned().collect(),
                    hint: Some("declare the group with `[[system.group]]`".into()),
                },
                span(value),
            );
        }
    }

    fn services(&mut self, raw: &[Spanned<raw::ServiceRaw>], accounts: &Accounts) -> Vec<Service> {
        let mut services = Vec::new();
        let mut names_seen = BTreeSet::new();
        for s in raw {
            let s = s.get_ref();
            let name = self
                .checked("service.name", &s.name, names::check_service_name)
                .unwrap_or_default();
            if !name.is_empty() && !names_seen.insert(name.clone()) {
                self.push(
                    K::Duplicate {
                        what: "service",
                        name: name.clone(),
                    },
                    span(&s.name),
                );
            }
            let exec = self.argv("service.exec", &s.exec).unwrap_or_default();
            let user = match &s.user {
                Some(u) => {
                    self.reference_user(u, accounts);
                    u.get_ref().clone()
                }
                None => "root".into(),
            };
            let group = s.group.as_ref().map(|g| {
                self.reference_group(g, accounts);
                g.get_ref().clone()
            });
            for key in s.environment.keys() {
                if let Err(reason) = names::check_env_name(key) {
                    self.push(
                        K::Invalid {
                            key: "service.environment".into(),
                            value: shown(key),
                            reason: reason.into(),
                            hint: None,
                        },
                        span(&s.name),
                    );
                }
            }
            let working_directory = s
                .working_directory
                .as_ref()
                .map(|w| {
                    self.guest_path("service.working-directory", w)
                        .unwrap_or_default()
                })
                .unwrap_or_else(|| "/".into());
            let restart = s
                .restart
                .as_ref()
                .and_then(|r| {
                    self.choice(
                        "restart policy",
                        r,
                        &[
                            ("no", Restart::No),
                            ("on-failure", Restart::OnFailure),
                            ("always", Restart::Always),
                        ],
                    )
                })
                .unwrap_or(Restart::OnFailure);
            let ready = s.ready.as_ref().and_then(|r| self.ready(r));
            services.push(Service {
                name,
                exec,
                user,
                group,
                environment: s.environment.clone(),
                working_directory,
                restart,
                after: s.after.iter().map(|a| a.get_ref().clone()).collect(),
                ready,
            });
        }
        self.check_after(raw, &names_seen);
        services
    }

    fn ready(&mut self, raw: &Spanned<raw::ReadyRaw>) -> Option<Ready> {
        let r = raw.get_ref();
        let given = usize::from(r.tcp.is_some())
            + usize::from(r.file.is_some())
            + usize::from(r.command.is_some())
            + usize::from(r.http.is_some());
        let timeout = r
            .timeout
            .as_ref()
            .and_then(|t| self.duration("service.ready.timeout", t))
            .unwrap_or(READY_TIMEOUT);
        if given != 1 {
            self.push(
                K::ExactlyOne {
                    table: "service.ready".into(),
                    keys: vec!["tcp", "file", "command", "http"],
                    found: given,
                },
                span(raw),
            );
            return None;
        }
        let probe = if let Some(port) = &r.tcp {
            ReadyProbe::Tcp(self.port("service.ready.tcp", port)?)
        } else if let Some(file) = &r.file {
            ReadyProbe::File(self.guest_path("service.ready.file", file)?)
        } else if let Some(command) = &r.command {
            ReadyProbe::Command(self.argv("service.ready.command", command)?)
        } else if let Some(http) = &r.http {
            let port = self.port("service.ready.http.port", &http.port);
            let path = self.http_path("service.ready.http.path", http.path.as_ref());
            ReadyProbe::Http {
                port: port?,
                path: path?,
            }
        } else {
            return None;
        };
        Some(Ready { probe, timeout })
    }

    fn http_path(&mut self, key: &str, value: Option<&Str>) -> Option<String> {
        match value {
            None => Some("/".into()),
            Some(p)
                if p.get_ref().starts_with('/')
                    && !p.get_ref().chars().any(char::is_whitespace) =>
            {
                Some(p.get_ref().clone())
            }
            Some(p) => {
                self.invalid(key, p, "expected a request path starting with `/`", None);
                None
            }
        }
    }

    /// `after` must name services of the recipe and must not form a cycle.
    fn check_after(&mut self, raw: &[Spanned<raw::ServiceRaw>], known: &BTreeSet<String>) {
        let mut graph: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        let mut name_spans: BTreeMap<&str, Range<usize>> = BTreeMap::new();
        for s in raw {
            let s = s.get_ref();
            let name = s.name.get_ref().as_str();
            name_spans.entry(name).or_insert_with(|| span(&s.name));
            let edges = graph.entry(name).or_default();
            for a in &s.after {
                if a.get_ref() == name {
                    self.invalid("service.after", a, "a service cannot wait for itself", None);
                } else if !known.contains(a.get_ref()) {
                    self.push(
                        K::UnknownReference {
                            what: "service",
                            name: shown(a.get_ref()),
                            known: known.iter().cloned().collect(),
                            hint: Some("`after` lists names of other `[[service]]` entries".into()),
                        },
                        span(a),
                    );
                } else {
                    edges.push(a.get_ref().as_str());
                }
            }
        }
        // Depth-first search with colours; one diagnostic per cycle found.
        let mut state: BTreeMap<&str, u8> = BTreeMap::new();
        let mut reported = BTreeSet::new();
        for start in graph.keys().copied() {
            let mut stack = Vec::new();
            if let Some(cycle) = find_cycle(start, &graph, &mut state, &mut stack) {
                let mut key: Vec<&str> = cycle[..cycle.len() - 1].to_vec();
                key.sort_unstable();
                if reported.insert(key) {
                    let at = name_spans.get(cycle[0]).cloned().unwrap_or(0..0);
                    self.push(
                        K::DependencyCycle {
                            cycle: cycle.iter().map(|s| (*s).to_owned()).collect(),
                        },
                        at,
                    );
                }
            }
        }
    }

    fn file_owner(
        &mut self,
        owner: Option<&Str>,
        group: Option<&Str>,
        accounts: &Accounts,
    ) -> (String, String) {
        let owner = owner.map_or_else(
            || "root".to_owned(),
            |o| {
                self.reference_user(o, accounts);
                o.get_ref().clone()
            },
        );
        let group = group.map_or_else(
            || "root".to_owned(),
            |g| {
                self.reference_group(g, accounts);
                g.get_ref().clone()
            },
        );
        (owner, group)
    }

    fn files(
        &mut self,
        raw: &[Spanned<raw::FileRaw>],
        accounts: &Accounts,
        context: &serde_json::Value,
        boot_keys: &BTreeSet<String>,
    ) -> Vec<FileEntry> {
        let mut out = Vec::new();
        for entry in raw {
            let f = entry.get_ref();
            let path = self.guest_path("file.path", &f.path).unwrap_or_default();
            let given = usize::from(f.content.is_some())
                + usize::from(f.source.is_some())
                + usize::from(f.template.is_some());
            let content =
                if given != 1 {
                    self.push(
                        K::ExactlyOne {
                            table: "file".into(),
                            keys: vec!["content", "source", "template"],
                            found: given,
                        },
                        if given == 0 {
                            span(&f.path)
                        } else {
                            span(entry)
                        },
                    );
                    None
                } else if let Some(c) = &f.content {
                    Some(FileContent::Inline(c.get_ref().clone()))
                } else if let Some(s) = &f.source {
                    self.host_file_or_dir("file.source", s)
                        .map(FileContent::Source)
                } else if let Some(t) = &f.template {
                    match f.template_at.as_ref().map(|w| {
                        self.choice("template time", w, &[("build", false), ("boot", true)])
                    }) {
                        Some(Some(true)) => self
                            .boot_template(t, boot_keys)
                            .map(FileContent::BootTemplate),
                        Some(None) => None,
                        Some(Some(false)) | None => {
                            self.render_template(t, context).map(FileContent::Inline)
                        }
                    }
                } else {
                    None
                };
            let mode = f
                .mode
                .as_ref()
                .and_then(|m| self.mode("file.mode", m))
                .unwrap_or(0o644);
            let (owner, group) = self.file_owner(f.owner.as_ref(), f.group.as_ref(), accounts);
            out.push(FileEntry {
                path,
                content: content.unwrap_or(FileContent::Inline(String::new())),
                mode,
                owner,
                group,
            });
        }
        out
    }

    /// Checks a `template-at = "boot"` template: only `{{ovf.<key>}}` of declared keys.
    fn boot_template(&mut self, template: &Str, keys: &BTreeSet<String>) -> Option<String> {
        let text = template.get_ref();
        match guest_init::deploy::template::keys(text) {
            Ok(used) => {
                for key in used {
                    if !keys.contains(key) {
                        self.invalid(
                            "file.template",
                            template,
                            &format!("`{{{{ovf.{key}}}}}` names no declared OVF property"),
                            Some(format!(
                                "declare it with `[[ovf.property]] key = \"{key}\"`; known: {}",
                                keys.iter()
                                    .map(|k| format!("`{k}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )),
                        );
                        return None;
                    }
                }
                Some(text.clone())
            }
            Err(err) => {
                self.invalid(
                    "file.template",
                    template,
                    &err.to_string(),
                    Some("boot-time templates use `{{ovf.<key>}}` placeholders only".into()),
                );
                None
            }
        }
    }

    fn render_template(&mut self, template: &Str, context: &serde_json::Value) -> Option<String> {
        let mut engine = handlebars::Handlebars::new();
        engine.set_strict_mode(true);
        engine.register_escape_fn(handlebars::no_escape);
        match engine.render_template(template.get_ref(), context) {
            Ok(text) => Some(text),
            Err(err) => {
                let reason = err
                    .reason()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                self.push(
                    K::Invalid {
                        key: "file.template".into(),
                        value: shown(template.get_ref()),
                        reason: if reason.is_empty() { "template error".into() } else { reason },
                        hint: Some(
                            "templates see `appliance.*`, `system.hostname`, `system.timezone`, `system.locale`, `vm.cpus` and `vm.memory_mib`"
                                .into(),
                        ),
                    },
                    span(template),
                );
                None
            }
        }
    }

    fn directories(
        &mut self,
        raw: &[Spanned<raw::DirectoryRaw>],
        accounts: &Accounts,
    ) -> Vec<DirectoryEntry> {
        let mut out = Vec::new();
        for d in raw {
            let d = d.get_ref();
            let path = self
                .guest_path("directory.path", &d.path)
                .unwrap_or_default();
            let mode = d
                .mode
                .as_ref()
                .and_then(|m| self.mode("directory.mode", m))
                .unwrap_or(0o755);
            let (owner, group) = self.file_owner(d.owner.as_ref(), d.group.as_ref(), accounts);
            out.push(DirectoryEntry {
                path,
                mode,
                owner,
                group,
            });
        }
        out
    }

    fn symlinks(&mut self, raw: &[Spanned<raw::SymlinkRaw>]) -> Vec<SymlinkEntry> {
        let mut out = Vec::new();
        for l in raw {
            let l = l.get_ref();
            let path = self.guest_path("symlink.path", &l.path).unwrap_or_default();
            let target = l.target.get_ref();
            if target.is_empty() || target.contains('\0') {
                self.invalid(
                    "symlink.target",
                    &l.target,
                    "expected a non-empty path",
                    None,
                );
            }
            out.push(SymlinkEntry {
                path,
                target: target.clone(),
            });
        }
        out
    }

    /// A guest path may be written by only one `[[file]]`, `[[directory]]` or `[[symlink]]`.
    fn check_unique_paths(&mut self, file: &raw::RecipeFile) {
        let mut seen = BTreeSet::new();
        let paths = file
            .file
            .iter()
            .map(|f| &f.get_ref().path)
            .chain(file.directory.iter().map(|d| &d.get_ref().path))
            .chain(file.symlink.iter().map(|s| &s.get_ref().path));
        let mut duplicates = Vec::new();
        for p in paths {
            if !seen.insert(p.get_ref().as_str()) {
                duplicates.push((p.get_ref().clone(), span(p)));
            }
        }
        for (name, at) in duplicates {
            self.push(K::Duplicate { what: "path", name }, at);
        }
    }

    fn network(&mut self, raw: Option<&Spanned<raw::NetworkRaw>>) -> Network {
        let Some(raw) = raw else {
            return Network::Dhcp;
        };
        let n = raw.get_ref();
        let dhcp = n.dhcp.as_ref().map(|d| *d.get_ref());
        match (dhcp, &n.static_) {
            (Some(true), Some(_)) => {
                self.push(
                    K::ExactlyOne {
                        table: "network".into(),
                        keys: vec!["dhcp = true", "static"],
                        found: 2,
                    },
                    span(raw),
                );
                Network::Dhcp
            }
            (_, Some(s)) => self
                .static_network(s)
                .map_or(Network::Dhcp, Network::Static),
            (Some(false), None) => Network::None,
            (Some(true) | None, None) => Network::Dhcp,
        }
    }

    fn static_network(&mut self, s: &raw::StaticRaw) -> Option<StaticNetwork> {
        let parsed = s.address.get_ref().split_once('/').and_then(|(a, p)| {
            let address: Ipv4Addr = a.parse().ok()?;
            let prefix: u8 = p.parse().ok().filter(|p| *p <= 32)?;
            Some((address, prefix))
        });
        let Some((address, prefix)) = parsed else {
            self.invalid(
                "network.static.address",
                &s.address,
                "expected an IPv4 address with a prefix length",
                Some("write it like `10.0.2.15/24`".into()),
            );
            return None;
        };
        let gateway = match &s.gateway {
            None => None,
            Some(g) => match g.get_ref().parse::<Ipv4Addr>() {
                Ok(gw) => {
                    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                    if u32::from(gw) & mask != u32::from(address) & mask {
                        self.invalid(
                            "network.static.gateway",
                            g,
                            "the gateway is outside the address's subnet",
                            None,
                        );
                    }
                    Some(gw)
                }
                Err(_) => {
                    self.invalid(
                        "network.static.gateway",
                        g,
                        "expected an IPv4 address",
                        None,
                    );
                    None
                }
            },
        };
        let mut dns = Vec::new();
        for d in &s.dns {
            match d.get_ref().parse::<IpAddr>() {
                Ok(ip) => dns.push(ip),
                Err(_) => self.invalid("network.static.dns", d, "expected an IP address", None),
            }
        }
        let ipv6 = s.address6.as_ref().and_then(|a| {
            let parsed = guest_init::deploy::parse_cidr6(a.get_ref());
            if parsed.is_none() {
                self.invalid(
                    "network.static.address6",
                    a,
                    "expected an IPv6 address with a prefix length",
                    Some("write it like `2001:db8::10/64`".into()),
                );
            }
            parsed
        });
        let gateway6 = s.gateway6.as_ref().and_then(|g| {
            let parsed = g.get_ref().parse::<std::net::Ipv6Addr>().ok();
            if parsed.is_none() {
                self.invalid(
                    "network.static.gateway6",
                    g,
                    "expected an IPv6 address",
                    None,
                );
            }
            parsed
        });
        Some(StaticNetwork {
            address,
            prefix,
            gateway,
            dns,
            ipv6,
            gateway6,
        })
    }

    /// A convertible image installs [`crate::resolve::CONVERTIBLE_PACKAGES`] whatever
    /// `exclude` says: excluding one is a contradiction, not a silent override.
    fn check_convertible_packages(&mut self, raw: &raw::PackagesRaw) {
        for name in &raw.exclude {
            if crate::resolve::CONVERTIBLE_PACKAGES.contains(&name.get_ref().as_str()) {
                self.invalid(
                    "packages.exclude",
                    name,
                    "`[disk] convertible = true` installs it: virt-v2v reads `/bin/sh` (dash) and runs `dpkg` in the guest",
                    Some("remove it from `exclude`, or drop `convertible`".into()),
                );
            }
        }
    }

    fn disk(&mut self, raw: Option<&raw::DiskRaw>) -> Disk {
        let size = raw
            .and_then(|d| d.size.as_ref())
            .and_then(|s| match s.get_ref() {
                Scalar::String(a) if a == "auto" => None,
                _ => {
                    let size = self.size("disk.size", s)?;
                    if size < MIN_DISK {
                        self.push(
                            K::InvalidSize {
                                key: "disk.size".into(),
                                value: size.to_string(),
                                reason: "smaller than the 16MiB minimum".into(),
                                suggestion: None,
                            },
                            span(s),
                        );
                    }
                    Some(size)
                }
            });
        let free_space = raw
            .and_then(|d| d.free_space.as_ref())
            .and_then(|s| self.size("disk.free-space", s))
            .unwrap_or(ByteSize::mib(64));
        let format_choices = [
            ("raw", DiskFormat::Raw),
            ("qcow2", DiskFormat::Qcow2),
            ("vmdk", DiskFormat::Vmdk),
            ("ova", DiskFormat::Ova),
            ("vhd", DiskFormat::Vhd),
            ("gce", DiskFormat::Gce),
        ];
        let mut formats = Vec::new();
        match raw.and_then(|d| d.formats.as_ref()) {
            None => formats.push(DiskFormat::Raw),
            Some(list) => {
                if list.get_ref().is_empty() {
                    self.push(
                        K::Invalid {
                            key: "disk.formats".into(),
                            value: "[]".into(),
                            reason: "at least one format is needed".into(),
                            hint: Some(
                                "use `[\"raw\"]`, or any of `raw`, `qcow2`, `vmdk`, `ova`, `vhd`, `gce`"
                                    .into(),
                            ),
                        },
                        span(list),
                    );
                }
                for f in list.get_ref() {
                    if let Some(format) = self.choice("disk format", f, &format_choices) {
                        if formats.contains(&format) {
                            self.push(
                                K::Duplicate {
                                    what: "disk format",
                                    name: f.get_ref().clone(),
                                },
                                span(f),
                            );
                        }
                        formats.push(format);
                    }
                }
            }
        }
        formats.sort_unstable();
        formats.dedup();
        let filesystem = raw
            .and_then(|d| d.filesystem.as_ref())
            .and_then(|f| self.choice("filesystem", f, &[("ext4", "ext4")]))
            .unwrap_or("ext4")
            .to_owned();
        Disk {
            size,
            free_space,
            formats,
            filesystem,
            convertible: raw.and_then(|d| d.convertible).unwrap_or(false),
        }
    }

    fn vm(&mut self, raw: Option<&raw::VmRaw>) -> Vm {
        let cpus = raw
            .and_then(|v| v.cpus.as_ref())
            .and_then(|c| self.integer_in("vm.cpus", c, 1..65, "expected between 1 and 64 CPUs"))
            .unwrap_or(1);
        let memory = raw
            .and_then(|v| v.memory.as_ref())
            .and_then(|m| {
                let size = self.size("vm.memory", m)?;
                if size < MIN_MEMORY || size.bytes() % (1 << 20) != 0 {
                    self.push(
                        K::InvalidSize {
                            key: "vm.memory".into(),
                            value: size.to_string(),
                            reason: "expected whole MiB, at least 64MiB".into(),
                            suggestion: None,
                        },
                        span(m),
                    );
                    return None;
                }
                Some(size)
            })
            .unwrap_or(ByteSize::mib(256));
        let firmware = raw
            .and_then(|v| v.firmware.as_ref())
            .and_then(|f| {
                self.choice(
                    "firmware",
                    f,
                    &[("bios", Firmware::Bios), ("efi", Firmware::Efi)],
                )
            })
            .unwrap_or(Firmware::Bios);
        let disk_controller = raw
            .and_then(|v| v.disk_controller.as_ref())
            .and_then(|c| {
                self.choice(
                    "disk controller",
                    c,
                    &[
                        ("lsilogic", DiskController::LsiLogic),
                        ("sata", DiskController::Sata),
                    ],
                )
            })
            .unwrap_or(DiskController::LsiLogic);
        let nic = raw
            .and_then(|v| v.nic.as_ref())
            .and_then(|n| {
                self.choice(
                    "nic",
                    n,
                    &[
                        ("e1000", Nic::E1000),
                        ("vmxnet3", Nic::Vmxnet3),
                        ("virtio", Nic::Virtio),
                    ],
                )
            })
            .unwrap_or(Nic::E1000);
        Vm {
            cpus,
            memory,
            firmware,
            disk_controller,
            nic,
        }
    }

    fn ovf(&mut self, raw: Option<&raw::OvfRaw>) -> Ovf {
        let Some(raw) = raw else {
            return Ovf::default();
        };
        let product_url = raw
            .product_url
            .as_ref()
            .and_then(|u| self.checked("ovf.product-url", u, names::check_url));
        let eula = raw
            .eula
            .as_ref()
            .and_then(|e| self.host_file("ovf.eula", e));
        let types: Vec<(&'static str, &'static str)> =
            OVF_PROPERTY_TYPES.iter().map(|t| (*t, *t)).collect();
        let mut keys = BTreeSet::new();
        let mut properties = Vec::new();
        for p in &raw.property {
            let p = p.get_ref();
            let key = p.key.get_ref();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                self.invalid(
                    "ovf.property.key",
                    &p.key,
                    "only letters, digits and `._-` are allowed",
                    None,
                );
            } else if !keys.insert(key.clone()) {
                self.push(
                    K::Duplicate {
                        what: "OVF property",
                        name: key.clone(),
                    },
                    span(&p.key),
                );
            }
            let type_ = p
                .type_
                .as_ref()
                .and_then(|t| self.choice("OVF property type", t, &types))
                .unwrap_or("string");
            if let Some(v) = &p.value
                && !ovf_value_matches(type_, v.get_ref())
            {
                self.invalid(
                    "ovf.property.value",
                    v,
                    &format!("not a valid `{type_}`"),
                    None,
                );
            }
            if guest_init::deploy::keys::ALL.contains(&key.as_str()) {
                self.invalid(
                    "ovf.property.key",
                    &p.key,
                    "this key is reserved for jeos's deploy-time network settings",
                    Some("the `jeos.*` network properties are declared for you; see `[ovf] network-properties`".into()),
                );
            }
            properties.push(OvfProperty {
                key: key.clone(),
                type_: type_.to_owned(),
                value: p.value.as_ref().map(|v| v.get_ref().clone()),
                label: p.label.clone(),
                user_configurable: p.user_configurable,
                description: p.description.clone(),
                password: p.password,
            });
        }
        let target_choices = [
            ("vmware", OvfTarget::Vmware),
            ("virtualbox", OvfTarget::Virtualbox),
            ("generic", OvfTarget::Generic),
        ];
        let mut targets = Vec::new();
        if let Some(list) = &raw.targets {
            for t in list.get_ref() {
                if let Some(target) = self.choice("OVF target", t, &target_choices) {
                    if targets.contains(&target) {
                        self.push(
                            K::Duplicate {
                                what: "OVF target",
                                name: t.get_ref().clone(),
                            },
                            span(t),
                        );
                    }
                    targets.push(target);
                }
            }
            if list.get_ref().is_empty() {
                self.push(
                    K::Invalid {
                        key: "ovf.targets".into(),
                        value: "[]".into(),
                        reason: "at least one target is needed".into(),
                        hint: Some("use any of `vmware`, `virtualbox`, `generic`, or leave `targets` out for all the hardware allows".into()),
                    },
                    span(list),
                );
            }
        }
        targets.sort_unstable();
        Ovf {
            product_url,
            eula,
            annotation: raw.annotation.clone(),
            properties,
            targets,
            network_properties: raw.network_properties.unwrap_or(true),
        }
    }

    /// `from = "guest" | "host"`; `host` only for the kinds the host can run (`http`, `tcp`).
    fn check_from(&mut self, check: &raw::CheckRaw) -> Option<CheckFrom> {
        let Some(value) = &check.from else {
            return Some(CheckFrom::Guest);
        };
        let from = self.choice(
            "check origin",
            value,
            &[("guest", CheckFrom::Guest), ("host", CheckFrom::Host)],
        )?;
        if from == CheckFrom::Host && check.http.is_none() && check.tcp.is_none() {
            self.invalid(
                "test.check.from",
                value,
                "only `http` and `tcp` checks can run from the host",
                Some(
                    "the host reaches the appliance through a forwarded TCP port; run `command`, `file` and `service` checks in the guest (drop `from`, or `from = \"guest\"`)".into(),
                ),
            );
            return None;
        }
        Some(from)
    }

    fn test(&mut self, raw: Option<&raw::TestRaw>, services: &[Service]) -> Test {
        let timeout = raw
            .and_then(|t| t.timeout.as_ref())
            .and_then(|t| self.duration("test.timeout", t))
            .unwrap_or(TEST_TIMEOUT);
        let service_names: Vec<String> = services.iter().map(|s| s.name.clone()).collect();
        let mut checks = Vec::new();
        let mut names_seen = BTreeSet::new();
        for c in raw.map(|t| t.check.as_slice()).unwrap_or_default() {
            let check = c.get_ref();
            let name = check.name.get_ref();
            if name.trim().is_empty() {
                self.invalid("test.check.name", &check.name, "the name is empty", None);
            } else if !names_seen.insert(name.clone()) {
                self.push(
                    K::Duplicate {
                        what: "check",
                        name: name.clone(),
                    },
                    span(&check.name),
                );
            }
            let given = usize::from(check.http.is_some())
                + usize::from(check.tcp.is_some())
                + usize::from(check.command.is_some())
                + usize::from(check.file.is_some())
                + usize::from(check.service.is_some());
            if given != 1 {
                self.push(
                    K::ExactlyOne {
                        table: "test.check".into(),
                        keys: vec!["http", "tcp", "command", "file", "service"],
                        found: given,
                    },
                    if given == 0 {
                        span(&check.name)
                    } else {
                        span(c)
                    },
                );
                continue;
            }
            let kind = if let Some(h) = &check.http {
                let port = self.port("test.check.http.port", &h.port);
                let path = self.http_path("test.check.http.path", h.path.as_ref());
                let status = match &h.status {
                    None => Some(200),
                    Some(s) => self.integer_in(
                        "test.check.http.status",
                        s,
                        100..600,
                        "expected an HTTP status between 100 and 599",
                    ),
                };
                match (port, path, status) {
                    (Some(port), Some(path), Some(status)) => Some(CheckKind::Http {
                        port,
                        path,
                        status,
                        body_contains: h.body_contains.clone(),
                    }),
                    _ => None,
                }
            } else if let Some(t) = &check.tcp {
                self.port("test.check.tcp.port", &t.port)
                    .map(|port| CheckKind::Tcp { port })
            } else if let Some(cmd) = &check.command {
                let run = self.argv("test.check.command.run", &cmd.run);
                let exit_code = match &cmd.exit_code {
                    None => Some(0),
                    Some(e) => self.integer_in(
                        "test.check.command.exit-code",
                        e,
                        0..256,
                        "expected an exit code between 0 and 255",
                    ),
                };
                match (run, exit_code) {
                    (Some(run), Some(exit_code)) => Some(CheckKind::Command {
                        run,
                        exit_code,
                        stdout_contains: cmd.stdout_contains.clone(),
                    }),
                    _ => None,
                }
            } else if let Some(f) = &check.file {
                self.guest_path("test.check.file.path", &f.path)
                    .map(|path| CheckKind::File { path })
            } else if let Some(s) = &check.service {
                if service_names.contains(s.name.get_ref()) {
                    Some(CheckKind::Service {
                        name: s.name.get_ref().clone(),
                    })
                } else {
                    self.push(
                        K::UnknownReference {
                            what: "service",
                            name: shown(s.name.get_ref()),
                            known: service_names.clone(),
                            hint: Some(
                                "a `service` check names a `[[service]]` of this recipe".into(),
                            ),
                        },
                        span(&s.name),
                    );
                    None
                }
            } else {
                None
            };
            let from = self.check_from(check);
            if let (Some(kind), Some(from)) = (kind, from) {
                checks.push(Check {
                    name: name.clone(),
                    kind,
                    from,
                });
            }
        }
        Test { timeout, checks }
    }
}

struct Accounts {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
}

/// Returns a cycle (first node repeated at the end) reachable from `start`, if any.
/// Iterative, so a long chain of services cannot overflow the stack.
fn find_cycle<'a>(
    start: &'a str,
    graph: &BTreeMap<&'a str, Vec<&'a str>>,
    state: &mut BTreeMap<&'a str, u8>,
    path: &mut Vec<&'a str>,
) -> Option<Vec<&'a str>> {
    const VISITING: u8 = 1;
    const DONE: u8 = 2;
    if state.get(start).is_some() {
        return None;
    }
    // Each frame: a node and the index of the next edge to follow.
    let mut frames: Vec<(&'a str, usize)> = vec![(start, 0)];
    state.insert(start, VISITING);
    path.push(start);
    while let Some(frame) = frames.last_mut() {
        let (node, index) = *frame;
        let edges = graph.get(node).map(Vec::as_slice).unwrap_or_default();
        if let Some(&next) = edges.get(index) {
            frame.1 += 1;
            match state.get(next) {
                Some(&DONE) => {}
                Some(&VISITING) => {
                    let at = path.iter().position(|n| *n == next)?;
                    let mut cycle = path[at..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                _ => {
                    state.insert(next, VISITING);
                    path.push(next);
                    frames.push((next, 0));
                }
            }
        } else {
            state.insert(node, DONE);
            path.pop();
            frames.pop();
        }
    }
    None
}

/// `30` (seconds), `30s`, `500ms`, `2m`, `2min`: the one duration grammar of jeos (recipe
/// values and command-line options alike).
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let n: u64 = digits.parse().ok()?;
    match unit.trim() {
        "" | "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" | "min" => n.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

fn ovf_value_matches(type_: &str, value: &str) -> bool {
    match type_ {
        "boolean" => matches!(value, "true" | "false"),
        "uint8" => value.parse::<u8>().is_ok(),
        "sint8" => value.parse::<i8>().is_ok(),
        "uint16" => value.parse::<u16>().is_ok(),
        "sint16" => value.parse::<i16>().is_ok(),
        "uint32" => value.parse::<u32>().is_ok(),
        "sint32" => value.parse::<i32>().is_ok(),
        "uint64" => value.parse::<u64>().is_ok(),
        "sint64" => value.parse::<i64>().is_ok(),
        "real32" => value.parse::<f32>().is_ok(),
        "real64" => value.parse::<f64>().is_ok(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph<'a>(edges: &[(&'a str, &[&'a str])]) -> BTreeMap<&'a str, Vec<&'a str>> {
        edges.iter().map(|(n, e)| (*n, e.to_vec())).collect()
    }

    #[test]
    fn finds_cycles() {
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"]), ("d", &[])]);
        let mut state = BTreeMap::new();
        let cycle = find_cycle("a", &g, &mut state, &mut Vec::new());
        assert_eq!(cycle, Some(vec!["a", "b", "c", "a"]));
    }

    #[test]
    fn acyclic_graph_has_no_cycle() {
        let g = graph(&[("a", &["b", "c"]), ("b", &["c"]), ("c", &[])]);
        let mut state = BTreeMap::new();
        for n in ["a", "b", "c"] {
            assert_eq!(find_cycle(n, &g, &mut state, &mut Vec::new()), None);
        }
    }

    #[test]
    fn long_chain_does_not_overflow() {
        let names: Vec<String> = (0..100_000).map(|i| format!("s{i}")).collect();
        let mut g: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for pair in names.windows(2) {
            g.insert(&pair[0], vec![&pair[1]]);
        }
        let mut state = BTreeMap::new();
        assert_eq!(find_cycle("s0", &g, &mut state, &mut Vec::new()), None);
    }

    const BASE: &str = "[appliance]\nname = \"demo\"\nversion = \"1.0\"\n[source]\nsuite = \"trixie\"\n[packages]\ninstall = [\"hello\"]\n";

    fn errors(extra: &str) -> Vec<K> {
        match super::super::parse_str("t.toml", &format!("{BASE}{extra}"), None) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors.into_iter().map(|e| e.kind).collect(),
        }
    }

    fn recipe(extra: &str) -> Recipe {
        super::super::parse_str("t.toml", &format!("{BASE}{extra}"), None)
            .unwrap_or_else(|e| panic!("{:#?}", e.errors))
    }

    #[test]
    fn defaults() {
        let r = recipe("");
        assert_eq!(r.kernel.package, "linux-image-amd64");
        assert_eq!(r.system.hostname, "demo");
        assert_eq!(r.network, Network::Dhcp);
        assert_eq!(r.disk.formats, vec![DiskFormat::Raw]);
        assert_eq!(r.disk.size, None);
        assert_eq!(r.vm.memory, ByteSize::mib(256));
        assert_eq!(r.test.timeout, TEST_TIMEOUT);
    }

    #[test]
    fn package_constraints() {
        let r = recipe("").packages;
        assert_eq!(r.install[0].name, "hello");
        let text = BASE.replace("[\"hello\"]", "[\"nginx (>= 1.22)\", \"libc6 (<< 2.40)\"]");
        let r = super::super::parse_str("t.toml", &text, None).expect("valid");
        assert_eq!(
            r.packages.install[0].constraint,
            Some((VersionOp::GreaterOrEqual, "1.22".into()))
        );
        assert_eq!(
            r.packages.install[1].constraint,
            Some((VersionOp::Less, "2.40".into()))
        );
        let text = BASE.replace("[\"hello\"]", "[\"nginx (~ 1)\"]");
        assert!(super::super::parse_str("t.toml", &text, None).is_err());
    }

    #[test]
    fn suite_aliases_are_rejected() {
        let text = BASE.replace("trixie", "stable");
        let err = super::super::parse_str("t.toml", &text, None).expect_err("alias");
        assert!(matches!(&err.errors[0].kind, K::Invalid { key, .. } if key == "source.suite"));
    }

    #[test]
    fn templates_render_strictly() {
        let r = recipe(
            "[[file]]\npath = \"/etc/motd\"\ntemplate = \"{{appliance.name}} on {{system.hostname}} <b>\"\n",
        );
        assert_eq!(
            r.files[0].content,
            FileContent::Inline("demo on demo <b>".into())
        );
        let errs = errors("[[file]]\npath = \"/etc/motd\"\ntemplate = \"{{appliance.nmae}}\"\n");
        assert!(matches!(&errs[..], [K::Invalid { key, .. }] if key == "file.template"));
        let errs = errors("[[file]]\npath = \"/etc/motd\"\ntemplate = \"{{#if}}\"\n");
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn check_from_is_guest_or_host_and_host_only_for_http_and_tcp() {
        let r = recipe(
            "[[test.check]]\nname = \"in\"\ntcp = { port = 80 }\n\n[[test.check]]\nname = \"out\"\nfrom = \"host\"\nhttp = { port = 80 }\n\n[[test.check]]\nname = \"g\"\nfrom = \"guest\"\nfile = { path = \"/etc/motd\" }\n",
        );
        let from: Vec<CheckFrom> = r.test.checks.iter().map(|c| c.from).collect();
        assert_eq!(from, [CheckFrom::Guest, CheckFrom::Host, CheckFrom::Guest]);

        let errs =
            errors("[[test.check]]\nname = \"x\"\nfrom = \"outside\"\ntcp = { port = 80 }\n");
        assert!(
            matches!(&errs[..], [K::UnknownChoice { value, choices, .. }] if value == "outside" && choices == &["guest", "host"]),
            "{errs:?}"
        );
        for kind in [
            "command = { run = [\"/bin/true\"] }",
            "file = { path = \"/etc/motd\" }",
        ] {
            let errs = errors(&format!(
                "[[test.check]]\nname = \"x\"\nfrom = \"host\"\n{kind}\n"
            ));
            assert!(
                matches!(&errs[..], [K::Invalid { key, reason, .. }] if key == "test.check.from" && reason == "only `http` and `tcp` checks can run from the host"),
                "{kind}: {errs:?}"
            );
        }
    }

    #[test]
    fn file_needs_exactly_one_content() {
        let errs = errors("[[file]]\npath = \"/etc/x\"\n");
        assert!(matches!(&errs[..], [K::ExactlyOne { found: 0, .. }]));
        let errs = errors("[[file]]\npath = \"/etc/x\"\ncontent = \"a\"\ntemplate = \"b\"\n");
        assert!(matches!(&errs[..], [K::ExactlyOne { found: 2, .. }]));
    }

    #[test]
    fn duplicates() {
        let errs = errors(
            "[[service]]\nname = \"a\"\nexec = [\"/bin/a\"]\n[[service]]\nname = \"a\"\nexec = [\"/bin/a\"]\n",
        );
        assert!(matches!(
            &errs[..],
            [K::Duplicate {
                what: "service",
                ..
            }]
        ));
        let errs = errors(
            "[[file]]\npath = \"/x\"\ncontent = \"\"\n[[symlink]]\npath = \"/x\"\ntarget = \"/y\"\n",
        );
        assert!(matches!(&errs[..], [K::Duplicate { what: "path", .. }]));
        let errs = errors("[[system.user]]\nname = \"root\"\n");
        assert!(matches!(&errs[..], [K::Duplicate { what: "user", .. }]));
    }

    #[test]
    fn static_network() {
        let r = recipe(
            "[network.static]\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.2.2\"\ndns = [\"10.0.2.3\"]\n",
        );
        let Network::Static(s) = r.network else {
            panic!("static network expected");
        };
        assert_eq!((s.address, s.prefix), (Ipv4Addr::new(10, 0, 2, 15), 24));
        let errs = errors("[network.static]\naddress = \"10.0.2.15/24\"\ngateway = \"10.0.3.1\"\n");
        assert!(matches!(&errs[..], [K::Invalid { key, .. }] if key == "network.static.gateway"));
        let errs = errors("[network.static]\naddress = \"10.0.2.15\"\n");
        assert!(matches!(&errs[..], [K::Invalid { key, .. }] if key == "network.static.address"));
        let errs = errors("[network]\ndhcp = true\n[network.static]\naddress = \"10.0.2.15/24\"\n");
        assert!(matches!(&errs[..], [K::ExactlyOne { .. }]));
        assert_eq!(recipe("[network]\ndhcp = false\n").network, Network::None);
    }

    #[test]
    fn kernel_flavour_and_package_conflict() {
        assert_eq!(
            recipe("[kernel]\nflavour = \"cloud\"\n").kernel.package,
            "linux-image-cloud-amd64"
        );
        let errs = errors("[kernel]\nflavour = \"cloud\"\npackage = \"linux-image-rt-amd64\"\n");
        assert!(matches!(&errs[..], [K::Invalid { key, .. }] if key == "kernel.flavour"));
    }

    #[test]
    fn references() {
        let errs = errors(
            "[[service]]\nname = \"a\"\nexec = [\"/bin/a\"]\nuser = \"redis\"\ngroup = \"redis\"\n",
        );
        assert!(matches!(
            &errs[..],
            [
                K::UnknownReference { what: "user", .. },
                K::UnknownReference { what: "group", .. }
            ]
        ));
        // A declared user brings its own primary group.
        let r = recipe(
            "[[system.user]]\nname = \"redis\"\nsystem = true\n[[service]]\nname = \"a\"\nexec = [\"/bin/a\"]\nuser = \"redis\"\ngroup = \"redis\"\n",
        );
        assert_eq!(r.system.users[0].home, "/nonexistent");
        assert_eq!(r.services[0].user, "redis");
        let errs = errors("[packages]\n");
        assert!(!errs.is_empty());
    }

    #[test]
    fn exclude_conflicts_with_install() {
        let text = format!("{BASE}exclude = [\"hello\"]\n");
        let err = super::super::parse_str("t.toml", &text, None).expect_err("conflict");
        assert!(matches!(&err.errors[0].kind, K::Invalid { key, .. } if key == "packages.exclude"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("2h"), None);
        assert_eq!(parse_duration("s"), None);
    }

    #[test]
    fn ovf_values() {
        assert!(ovf_value_matches("uint8", "255"));
        assert!(!ovf_value_matches("uint8", "256"));
        assert!(ovf_value_matches("boolean", "true"));
        assert!(!ovf_value_matches("boolean", "yes"));
        assert!(ovf_value_matches("string", "anything"));
    }
}

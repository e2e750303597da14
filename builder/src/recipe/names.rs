//! Pure checks for the names and small values a recipe contains: appliance names, Debian
//! package names, hostnames, user names, absolute paths, file modes.
//!
//! Each check returns the reason for a rejection as a short lowercase phrase, which
//! `validate` turns into a diagnostic label.

use std::fmt;

/// Longest appliance name: it becomes a hostname label and part of file names.
pub const MAX_APP_NAME: usize = 63;

/// A validated appliance name: `[a-z0-9][a-z0-9-]*`, at most 63 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct AppName(String);

impl AppName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, &'static str> {
        check_app_name(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn check_app_name(name: &str) -> Result<(), &'static str> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("the name is empty"),
        Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
            return Err("must start with a lowercase letter or a digit");
        }
        Some(_) => {}
    }
    if name.len() > MAX_APP_NAME {
        return Err("longer than 63 characters");
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err("only lowercase letters, digits and `-` are allowed");
    }
    Ok(())
}

/// Debian Policy §5.6.1: at least two characters, lowercase letters, digits, `+`, `-`,
/// `.`, starting with a letter or digit.
pub fn check_package_name(name: &str) -> Result<(), &'static str> {
    let first = name.chars().next().ok_or("the package name is empty")?;
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err("must start with a lowercase letter or a digit");
    }
    if name.len() < 2 {
        return Err("package names have at least two characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '+' | '-' | '.'))
    {
        return Err("only lowercase letters, digits, `+`, `-` and `.` are allowed");
    }
    Ok(())
}

/// Debian Policy §5.6.12 version characters (epoch, upstream, revision), loosely: starts
/// with a digit, then alphanumerics and `.+~:-`.
pub fn check_debian_version(version: &str) -> Result<(), &'static str> {
    let first = version.chars().next().ok_or("the version is empty")?;
    if !first.is_ascii_digit() {
        return Err("a Debian version starts with a digit");
    }
    if !version
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '~' | ':' | '-'))
    {
        return Err("only letters, digits and `.+~:-` are allowed in a version");
    }
    Ok(())
}

/// RFC 1123 hostname: dot-separated labels of 1-63 letters, digits and `-`, not starting
/// or ending with `-`; 253 characters at most.
pub fn check_hostname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the hostname is empty");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Err("empty label between dots");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with `-`");
        }
        if !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err("only letters, digits, `-` and `.` are allowed");
        }
    }
    Ok(())
}

/// User and group names as Debian's `adduser` accepts them by default
/// (`^[a-z_][a-z0-9_-]*$`), at most 32 characters.
pub fn check_account_name(name: &str) -> Result<(), &'static str> {
    let first = name.chars().next().ok_or("the name is empty")?;
    if !(first.is_ascii_lowercase() || first == '_') {
        return Err("must start with a lowercase letter or `_`");
    }
    if name.len() > 32 {
        return Err("longer than 32 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'))
    {
        return Err("only lowercase letters, digits, `_` and `-` are allowed");
    }
    Ok(())
}

/// Service names: `[a-z0-9][a-z0-9._@-]*`, at most 64 characters.
pub fn check_service_name(name: &str) -> Result<(), &'static str> {
    let first = name.chars().next().ok_or("the name is empty")?;
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err("must start with a lowercase letter or a digit");
    }
    if name.len() > 64 {
        return Err("longer than 64 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err("only lowercase letters, digits and `._@-` are allowed");
    }
    Ok(())
}

/// An absolute path inside the appliance: starts with `/`, no empty, `.` or `..`
/// components, no trailing `/` (except the root itself), no NUL.
///
/// On failure returns the reason and, when one exists, the normalized spelling.
pub fn check_guest_path(path: &str) -> Result<(), (&'static str, Option<String>)> {
    if !path.starts_with('/') {
        return Err(("must be an absolute path", None));
    }
    if path.contains('\0') {
        return Err(("contains a NUL byte", None));
    }
    if path.split('/').any(|c| c == "..") {
        return Err(("`..` is not allowed", None));
    }
    let normalized = normalize(path);
    if normalized != path {
        return Err(("the path is not normalized", Some(normalized)));
    }
    Ok(())
}

fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// A file mode written as an octal string of three or four digits (`"0644"`).
pub fn parse_mode(text: &str) -> Result<u32, &'static str> {
    if !(3..=4).contains(&text.len()) || !text.chars().all(|c| ('0'..='7').contains(&c)) {
        return Err("expected three or four octal digits");
    }
    u32::from_str_radix(text, 8).map_err(|_| "expected three or four octal digits")
}

/// Environment variable names (POSIX: letters, digits and `_`, not starting with a digit).
pub fn check_env_name(name: &str) -> Result<(), &'static str> {
    let first = name.chars().next().ok_or("the variable name is empty")?;
    if first.is_ascii_digit() {
        return Err("cannot start with a digit");
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err("only letters, digits and `_` are allowed");
    }
    Ok(())
}

/// Kernel module names: letters, digits, `_` and `-`.
pub fn check_module_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the module name is empty");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
    {
        return Err("only letters, digits, `_` and `-` are allowed");
    }
    Ok(())
}

/// An `http://` or `https://` URL with a host and no whitespace.
pub fn check_url(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or("expected an `http://` or `https://` URL")?;
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("URLs cannot contain whitespace");
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err("the URL has no host");
    }
    Ok(())
}

/// Time zone names as in tzdata (`UTC`, `Europe/Paris`): no absolute or parent paths.
pub fn check_timezone(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the time zone is empty");
    }
    if name.starts_with('/')
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("expected a tzdata name such as `UTC` or `Europe/Paris`");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '-'))
    {
        return Err("expected a tzdata name such as `UTC` or `Europe/Paris`");
    }
    Ok(())
}

/// Locale names (`C.UTF-8`, `en_US.UTF-8`, `de_DE@euro`).
pub fn check_locale(name: &str) -> Result<(), &'static str> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '@'))
    {
        return Err("expected a locale name such as `C.UTF-8` or `en_US.UTF-8`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names() {
        assert!(AppName::new("nginx").is_ok());
        assert!(AppName::new("0x-web-2").is_ok());
        assert_eq!(
            AppName::new("Nginx"),
            Err("must start with a lowercase letter or a digit")
        );
        assert_eq!(AppName::new(""), Err("the name is empty"));
        assert_eq!(
            AppName::new("web_server"),
            Err("only lowercase letters, digits and `-` are allowed")
        );
        assert!(AppName::new(&"a".repeat(63)).is_ok());
        assert_eq!(
            AppName::new(&"a".repeat(64)),
            Err("longer than 63 characters")
        );
    }

    #[test]
    fn package_names() {
        assert!(check_package_name("libstdc++6").is_ok());
        assert!(check_package_name("redis-server").is_ok());
        assert!(check_package_name("x").is_err());
        assert!(check_package_name("Nginx").is_err());
        assert!(check_package_name("-foo").is_err());
        assert!(check_package_name("foo_bar").is_err());
    }

    #[test]
    fn debian_versions() {
        assert!(check_debian_version("1:2.36-9+deb12u1").is_ok());
        assert!(check_debian_version("1.22~rc1").is_ok());
        assert!(check_debian_version("v1").is_err());
        assert!(check_debian_version("1 2").is_err());
    }

    #[test]
    fn hostnames() {
        assert!(check_hostname("nginx").is_ok());
        assert!(check_hostname("web-1.example.org").is_ok());
        assert!(check_hostname("-web").is_err());
        assert!(check_hostname("web-").is_err());
        assert!(check_hostname("web..org").is_err());
        assert!(check_hostname("web_1").is_err());
        assert!(check_hostname(&"a".repeat(64)).is_err());
        assert!(check_hostname("").is_err());
    }

    #[test]
    fn account_names() {
        assert!(check_account_name("redis").is_ok());
        assert!(check_account_name("_apt").is_ok());
        assert!(check_account_name("www-data").is_ok());
        assert!(check_account_name("1user").is_err());
        assert!(check_account_name("Root").is_err());
    }

    #[test]
    fn guest_paths() {
        assert!(check_guest_path("/etc/redis/redis.conf").is_ok());
        assert!(check_guest_path("/").is_ok());
        assert_eq!(
            check_guest_path("etc/passwd"),
            Err(("must be an absolute path", None))
        );
        assert_eq!(
            check_guest_path("/etc/../shadow"),
            Err(("`..` is not allowed", None))
        );
        assert_eq!(
            check_guest_path("/etc//./hosts/"),
            Err(("the path is not normalized", Some("/etc/hosts".into())))
        );
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert_eq!(parse_mode("4755"), Ok(0o4755));
        assert!(parse_mode("0648").is_err());
        assert!(parse_mode("64").is_err());
        assert!(parse_mode("00644").is_err());
        assert!(parse_mode("rw-").is_err());
    }

    #[test]
    fn urls_and_small_names() {
        assert!(check_url("https://example.org/app").is_ok());
        assert!(check_url("ftp://example.org").is_err());
        assert!(check_url("http:///path").is_err());
        assert!(check_url("http://a b").is_err());
        assert!(check_env_name("REDIS_PORT").is_ok());
        assert!(check_env_name("1X").is_err());
        assert!(check_timezone("Europe/Paris").is_ok());
        assert!(check_timezone("../etc/passwd").is_err());
        assert!(check_locale("en_US.UTF-8").is_ok());
        assert!(check_locale("en US").is_err());
        assert!(check_module_name("vmw_pvscsi").is_ok());
        assert!(check_module_name("a/b").is_err());
        assert!(check_service_name("nginx").is_ok());
        assert!(check_service_name("getty@tty1").is_ok());
        assert!(check_service_name("Nginx").is_err());
    }
}

//! The commented starter recipes written by `jeos new` (`--template` picks one).

/// Which starter `jeos new` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StarterTemplate {
    /// Every table and key, documented (the default).
    #[default]
    Full,
    /// A static web server (nginx).
    Web,
    /// PostgreSQL with its cluster created by a first-boot task.
    Database,
    /// An OpenSSH server: host keys from a first-boot task, key-only login.
    Ssh,
    /// The smallest useful appliance: one package, one service, one check.
    Minimal,
}

/// Returns a starter recipe for an appliance called `name` (already validated). It
/// documents every table and key, and passes `jeos check` as written.
pub fn starter_recipe(name: &super::AppName) -> String {
    starter(name, StarterTemplate::Full)
}

/// The starter recipe of `template` for an appliance called `name`; each passes
/// `jeos check` as written.
pub fn starter(name: &super::AppName, template: StarterTemplate) -> String {
    let text = match template {
        StarterTemplate::Full => STARTER,
        StarterTemplate::Web => WEB,
        StarterTemplate::Database => DATABASE,
        StarterTemplate::Ssh => SSH,
        StarterTemplate::Minimal => MINIMAL,
    };
    text.replace("@NAME@", name.as_str())
}

const MINIMAL: &str = r##"# jeos recipe for the `@NAME@` appliance (`jeos new --template minimal`).
# `jeos new @NAME@` writes a starter that documents every key.

[appliance]
name = "@NAME@"
version = "0.1.0"

[source]
suite = "trixie"

[packages]
install = ["busybox"]            # dependencies are added for you; Essential packages are not

[[service]]
name = "httpd"
exec = ["/usr/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/srv/www"]
ready = { tcp = 80 }

[[file]]
path = "/srv/www/index.html"
content = "hello from @NAME@\n"

[[test.check]]
name = "serves the page"
http = { port = 80, body-contains = "hello from @NAME@" }
"##;

const WEB: &str = r##"# jeos recipe for the `@NAME@` appliance: nginx serving static files
# (`jeos new --template web`).

[appliance]
name = "@NAME@"
version = "0.1.0"
description = "Static web server (nginx)"

[source]
suite = "trixie"

[packages]
install = ["nginx"]
exclude = ["iproute2"]           # needed by nginx's init scripts only; guest-init supervises it

[[service]]
name = "nginx"
exec = ["/usr/sbin/nginx", "-g", "daemon off;"]
restart = "always"
ready = { http = { port = 80, path = "/" }, timeout = "30s" }

# Maintainer scripts do not run: what nginx's postinst would have set up.
[[directory]]
path = "/var/log/nginx"
owner = "www-data"
group = "adm"

[[directory]]
path = "/var/lib/nginx"
owner = "www-data"
group = "www-data"

[[symlink]]
path = "/etc/nginx/sites-enabled/default"
target = "/etc/nginx/sites-available/default"

[[file]]
path = "/var/www/html/index.html"
content = "hello from @NAME@\n"

[disk]
formats = ["raw", "ova"]

[[test.check]]
name = "serves the page"
http = { port = 80, path = "/", body-contains = "hello from @NAME@" }
"##;

const DATABASE: &str = r##"# jeos recipe for the `@NAME@` appliance: PostgreSQL 17 (`jeos new --template database`).
# The cluster is made by `initdb` on the appliance's first boot (a `[[task]]`), so every
# appliance gets its own; later boots find the marker and skip it.

[appliance]
name = "@NAME@"
version = "0.1.0"
description = "PostgreSQL database server"

[source]
suite = "trixie"

[packages]
# initdb runs the server through /bin/sh; Essential packages (dash) are not in the
# closure unless named.
install = ["postgresql-17", "dash"]

[[system.user]]
name = "postgres"                # postgresql-common's postinst would create it
system = true
home = "/var/lib/postgresql"

[[directory]]
path = "/var/lib/postgresql/17"
owner = "postgres"
group = "postgres"

[[task]]
name = "initdb"
exec = ["/usr/lib/postgresql/17/bin/initdb", "--pgdata=/var/lib/postgresql/17/main", "--auth=trust", "--locale=C", "--encoding=UTF8"]
when = "first-boot"              # or "every-boot"
user = "postgres"
before = ["postgres"]            # services that wait for it (default: all of them)
timeout = "10m"

[[service]]
name = "postgres"
exec = ["/usr/lib/postgresql/17/bin/postgres", "-D", "/var/lib/postgresql/17/main", "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=/run/postgresql"]
user = "postgres"
ready = { tcp = 5432, timeout = "120s" }

[disk]
free-space = "128MiB"
formats = ["raw", "ova"]

[vm]
memory = "512MiB"

[test]
timeout = "300s"

[[test.check]]
name = "answers SELECT 1"
command = { run = ["/usr/lib/postgresql/17/bin/psql", "-h", "127.0.0.1", "-U", "postgres", "-c", "SELECT 1"], stdout-contains = "(1 row)" }
"##;

const SSH: &str = r##"# jeos recipe for the `@NAME@` appliance: an OpenSSH server (`jeos new --template ssh`).
# Host keys are made on the first boot by a `[[task]]`; login is by key only.

[appliance]
name = "@NAME@"
version = "0.1.0"
description = "OpenSSH server"

[source]
suite = "trixie"

[packages]
install = ["openssh-server", "dash"]   # dash: the login shell (/bin/sh)

[[system.user]]
name = "admin"
shell = "/bin/sh"

[[directory]]
path = "/run/sshd"               # below /run: created at every boot
mode = "0755"

[[directory]]
path = "/home/admin/.ssh"
mode = "0700"
owner = "admin"
group = "admin"

[[file]]
path = "/home/admin/.ssh/authorized_keys"
mode = "0600"
owner = "admin"
group = "admin"
# Replace with your public key, e.g. the contents of ~/.ssh/id_ed25519.pub.
content = "# ssh-ed25519 AAAA... you@example.org\n"

[[file]]
path = "/etc/ssh/sshd_config"
content = """
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
HostKey /etc/ssh/ssh_host_rsa_key
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PidFile none
"""

[[task]]
name = "host-keys"
exec = ["/usr/bin/ssh-keygen", "-A"]
before = ["sshd"]

[[service]]
name = "sshd"
exec = ["/usr/sbin/sshd", "-D", "-e"]
restart = "always"
ready = { tcp = 22 }

[disk]
formats = ["raw", "ova"]

[[test.check]]
name = "answers with an SSH banner"
command = { run = ["/usr/bin/ssh-keyscan", "-T", "10", "127.0.0.1"], stdout-contains = "SSH-2.0-OpenSSH" }
"##;

const STARTER: &str = r##"#:schema ./jeos.schema.json
# jeos recipe for the `@NAME@` appliance.
#
# The line above lets editors (taplo, Even Better TOML) complete and check keys with the
# schema `jeos new` wrote beside this file (`jeos schema > jeos.schema.json` refreshes it).
# Every key is described in docs/recipe.md (`jeos schema --format markdown`).
#
# `jeos check @NAME@.toml` validates this file. Keys are kebab-case; unknown keys are errors.
# Sizes are integer bytes or strings with a binary unit: "512KiB", "64MiB", "2GiB".
# Durations are integer seconds or strings like "30s", "500ms", "2m".
# Paths on the host (`source`, `keyring`, `eula`) are relative to this file's directory.

[appliance]
name = "@NAME@"                  # [a-z0-9][a-z0-9-]*, at most 63 characters; used in file names
version = "0.1.0"                # part of the output directory name: dist/@NAME@-0.1.0/
description = "The @NAME@ appliance"
# vendor = "Example Org"         # OVF Vendor
# url = "https://example.org"    # OVF VendorUrl

[source]
distribution = "debian"          # only Debian for now
suite = "trixie"                 # a codename: bullseye, bookworm, trixie, forky or sid
# mirror = "http://deb.example.org/debian"  # default: the mirror in the host's apt sources
components = ["main"]            # main, contrib, non-free, non-free-firmware
# keyring = "keys/archive.gpg"   # default: the host's Debian archive keyring

[packages]
install = ["busybox"]            # what the appliance is for; dependencies are added for you
                                 # a version constraint is allowed: "nginx (>= 1.22)"
exclude = []                     # dependencies to leave out on purpose (with a warning)
prefer = []                      # preferred alternatives, e.g. ["mawk"]

[kernel]
flavour = "generic"              # "generic" drives VMware/VirtualBox default hardware (e1000,
                                 # LSI Logic, AHCI); "cloud" is smaller but virtio-oriented
# package = "linux-image-amd64"  # an explicit kernel package instead of `flavour`
extra-modules = []               # modules added to the initramfs, e.g. ["vfat"]
cmdline = []                     # extra kernel arguments, one per string, e.g. ["quiet"]

[system]
hostname = "@NAME@"              # RFC 1123; default: the appliance name
timezone = "UTC"                 # a tzdata name such as "Europe/Paris"
locale = "C.UTF-8"

# Package maintainer scripts do not run: declare the accounts your services use.
# [[system.user]]
# name = "app"
# system = true                  # system account: home /nonexistent, shell /usr/sbin/nologin
# uid = 990                      # default: allocated at build time
# group = "app"                  # primary group; default: a group named like the user
# groups = []                    # supplementary groups
# home = "/var/lib/app"
# shell = "/usr/sbin/nologin"
#
# [[system.group]]
# name = "app"
# gid = 990
# system = true

# Services that guest-init (PID 1) starts and supervises, in `after` order.
[[service]]
name = "hello"
exec = ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/srv/www"]  # absolute path first
user = "root"                    # default "root"
# group = "root"
# environment = { LANG = "C.UTF-8" }
working-directory = "/"
restart = "on-failure"           # "no", "on-failure" (default) or "always"
after = []                       # names of services that must be ready first
ready = { tcp = 80, timeout = "30s" }  # or { file = "/run/x" }, { command = ["/bin/true"] },
                                       # or { http = { port = 80, path = "/" } }

# Programs run to completion at boot, supervised like services; the appliance is ready
# only when all of them succeeded (a failure's output is in the reason).
# [[task]]
# name = "setup"
# exec = ["/usr/bin/app-setup", "--init"]  # absolute path first
# when = "first-boot"            # "first-boot" (default: once, a marker in /var/lib/jeos/tasks)
#                                # or "every-boot"
# user = "root"
# environment = { LANG = "C.UTF-8" }
# working-directory = "/"
# timeout = "5m"                 # default 5 minutes
# before = ["hello"]             # services that wait for it (default: every service)
# after = []                     # services it waits for

# Files written into the image. Exactly one of `content`, `source` or `template`.
[[file]]
path = "/srv/www/index.html"     # absolute and normalized
content = "hello from @NAME@\n"
mode = "0644"                    # an octal string
owner = "root"
group = "root"

[[file]]
path = "/etc/motd"
# Handlebars, rendered with `appliance.*`, `system.*`, `vm.cpus` and `vm.memory_mib`.
template = "{{appliance.name}} {{appliance.version}}\n"
# source = "files/motd"          # or copy a file that sits next to this recipe

# [[directory]]                  # below /run or /tmp: created at every boot
# path = "/var/lib/app"
# mode = "0750"
# owner = "app"
# group = "app"

# [[symlink]]
# path = "/etc/localtime"
# target = "/usr/share/zoneinfo/UTC"

[network]
dhcp = true                      # or: [network.static] address = "10.0.2.15/24",
                                 #     gateway = "10.0.2.2", dns = ["10.0.2.3"]

[disk]
size = "auto"                    # "auto" (smallest that fits plus `free-space`) or a size
free-space = "64MiB"
formats = ["raw"]                # any of "raw", "qcow2", "vmdk", "ova"
filesystem = "ext4"

[vm]                             # the OVF VirtualHardwareSection
cpus = 1                         # 1 to 64
memory = "256MiB"                # at least 64MiB
firmware = "bios"                # "bios" or "efi"
disk-controller = "lsilogic"     # "lsilogic" or "sata"
nic = "e1000"                    # "e1000", "vmxnet3" or "virtio"

[ovf]
# product-url = "https://example.org/@NAME@"
# eula = "EULA.txt"
annotation = "Built with jeos"
# [[ovf.property]]
# key = "app.greeting"
# type = "string"                # OVF types: string, boolean, uint8..uint64, sint8..sint64, real32, real64
# value = "hello"
# label = "Greeting"
# user-configurable = true

# Smoke tests run inside the booted appliance by `jeos test`.
[test]
timeout = "120s"                 # boot plus all checks

[[test.check]]
name = "serves the page"         # exactly one of http, tcp, command, file, service
http = { port = 80, path = "/index.html", status = 200, body-contains = "hello from @NAME@" }

[[test.check]]
name = "port is open"
tcp = { port = 80 }

[[test.check]]
name = "motd written"
file = { path = "/etc/motd" }

[[test.check]]
name = "service is ready"
service = { name = "hello" }

[[test.check]]
name = "busybox runs"
command = { run = ["/bin/busybox", "true"], exit-code = 0 }
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starter_is_valid() {
        let name = super::super::AppName::new("demo-app").expect("valid name");
        let text = starter_recipe(&name);
        let recipe = super::super::parse_str("demo-app.toml", &text, None)
            .unwrap_or_else(|e| panic!("{:#?}", e.errors));
        assert_eq!(recipe.appliance.name.as_str(), "demo-app");
        assert_eq!(recipe.test.checks.len(), 5);
        assert!(
            matches!(&recipe.files[1].content, super::super::FileContent::Inline(t) if t == "demo-app 0.1.0\n")
        );
    }

    #[test]
    fn every_template_is_valid() {
        let name = super::super::AppName::new("demo-app").expect("valid name");
        for (template, tasks) in [
            (StarterTemplate::Full, 0),
            (StarterTemplate::Web, 0),
            (StarterTemplate::Database, 1),
            (StarterTemplate::Ssh, 1),
            (StarterTemplate::Minimal, 0),
        ] {
            let text = starter(&name, template);
            let recipe = super::super::parse_str("demo-app.toml", &text, None)
                .unwrap_or_else(|e| panic!("{template:?}: {:#?}", e.errors));
            assert_eq!(recipe.tasks.len(), tasks, "{template:?}");
            assert!(!recipe.test.checks.is_empty(), "{template:?}");
            assert!(text.contains("name = \"demo-app\""), "{template:?}");
        }
    }
}

//! The commented starter recipe written by `jeos new`.

/// Returns a starter recipe for an appliance called `name` (already validated). It
/// documents every table and key, and passes `jeos check` as written.
pub fn starter_recipe(name: &super::AppName) -> String {
    STARTER.replace("@NAME@", name.as_str())
}

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

# [[directory]]
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
}

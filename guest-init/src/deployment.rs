//! Deploy-time configuration at boot: find the OVF environment and NoCloud seeds on
//! ISO 9660 media, VMware's `guestinfo.ovfEnv` (on VMware only) and the `opt/jeos/...`
//! fw_cfg files, merge them over the defaults of `init.json` (OVF environment, then
//! guestinfo, then NoCloud, then fw_cfg, then the defaults), and render
//! the boot-time files. The parsing is in the library (`guest_init::deploy`).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use guest_init::config::InitConfig;
use guest_init::deploy::{
    MAX_FILE_BYTES, Properties, Settings, iso9660, nocloud, ovfenv, template, vmware,
};

use crate::log::info;

/// Where QEMU's fw_cfg driver lists named files.
const FW_CFG_DIR: &str = "/sys/firmware/qemu_fw_cfg/by_name/opt/jeos";
/// How long to wait for a CD-ROM drive to report its medium.
const MEDIA_WAIT: Duration = Duration::from_secs(2);

struct Device(File);

impl iso9660::ReadAt for Device {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> bool {
        self.0.read_exact_at(buf, offset).is_ok()
    }
}

/// What the platform supplied.
#[derive(Debug, Default)]
pub struct Deployed {
    /// Every property value (sources over defaults).
    pub properties: Properties,
    /// Host name and static network from the well-known keys.
    pub settings: Settings,
}

fn text(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Reads one medium; `Some` for an OVF environment or a NoCloud seed.
fn read_medium(path: &Path) -> Option<(&'static str, Properties)> {
    let mut dev = Device(File::open(path).ok()?);
    let volume = iso9660::open(&mut dev)?;
    if let Some(xml) = text(iso9660::read_root_file(
        &mut dev,
        &volume,
        "ovf-env.xml",
        MAX_FILE_BYTES,
    )) {
        return Some(("ovf-env.xml", ovfenv::parse(&xml)));
    }
    if volume.id.eq_ignore_ascii_case("cidata") {
        let meta = text(iso9660::read_root_file(
            &mut dev,
            &volume,
            "meta-data",
            MAX_FILE_BYTES,
        ));
        let network = text(iso9660::read_root_file(
            &mut dev,
            &volume,
            "network-config",
            MAX_FILE_BYTES,
        ));
        let (props, problems) = nocloud::parse(meta.as_deref(), network.as_deref());
        for p in problems {
            info!("nocloud: {p}");
        }
        return Some(("nocloud", props));
    }
    None
}

/// Whole-disk block devices that may hold a seed (CD-ROMs first).
fn candidate_devices() -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = std::fs::read_dir("/sys/block")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
        .map(|n| {
            let cdrom = n.starts_with("sr");
            (n, cdrom)
        })
        .collect();
    out.sort_by_key(|(n, cdrom)| (!cdrom, n.clone()));
    out
}

fn scan_media() -> Vec<(&'static str, String, Properties)> {
    let started = Instant::now();
    loop {
        let mut found = Vec::new();
        let mut unready_cdrom = false;
        for (name, cdrom) in candidate_devices() {
            let path = Path::new("/dev").join(&name);
            match read_medium(&path) {
                Some((kind, props)) => found.push((kind, name, props)),
                None if cdrom && File::open(&path).is_err() => unready_cdrom = true,
                None => {}
            }
        }
        if !found.is_empty() || !unready_cdrom || started.elapsed() > MEDIA_WAIT {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `guestinfo.ovfEnv` through VMware's backdoor, only when running on VMware.
fn read_vmware_guestinfo() -> Option<Properties> {
    if !crate::vmware::detected() {
        return None;
    }
    let Some(mut port) = crate::vmware::Port::open() else {
        info!("deploy: vmware detected, but the backdoor port is not accessible");
        return None;
    };
    match vmware::guestinfo(&mut port, "ovfEnv", MAX_FILE_BYTES) {
        Ok(Some(xml)) => Some(ovfenv::parse(&String::from_utf8_lossy(&xml))),
        Ok(None) => None,
        Err(err) => {
            info!("deploy: vmware guestinfo.ovfEnv: {err}");
            None
        }
    }
}

fn read_fw_cfg() -> Properties {
    let mut props = Properties::new();
    for entry in std::fs::read_dir(FW_CFG_DIR)
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(key) = entry.file_name().into_string() else {
            continue;
        };
        let raw = entry.path().join("raw");
        let Ok(meta) = std::fs::metadata(&raw) else {
            continue;
        };
        if usize::try_from(meta.len()).map_or(true, |n| n > MAX_FILE_BYTES) {
            continue;
        }
        if let Ok(bytes) = std::fs::read(&raw) {
            let value = String::from_utf8_lossy(&bytes);
            props.insert(key, value.trim_end_matches(['\n', '\0']).to_owned());
        }
    }
    props
}

/// Reads every source and merges them over `config.properties`.
pub fn gather(config: &InitConfig) -> Deployed {
    let mut layers: Vec<(String, Properties)> = Vec::new();
    let mut media = scan_media();
    // The OVF environment wins over a NoCloud seed.
    media.sort_by_key(|(kind, _, _)| *kind != "ovf-env.xml");
    for (kind, device, props) in media {
        info!("deploy: {kind} on /dev/{device}: {} value(s)", props.len());
        layers.push((kind.to_owned(), props));
    }
    if let Some(props) = read_vmware_guestinfo() {
        info!("deploy: vmware guestinfo.ovfEnv: {} value(s)", props.len());
        // After an OVF environment CD-ROM (the deployer chose the `iso` transport), before
        // a NoCloud seed.
        let at = layers
            .iter()
            .take_while(|(kind, _)| kind == "ovf-env.xml")
            .count();
        layers.insert(at, ("guestinfo.ovfEnv".to_owned(), props));
    }
    let fw = read_fw_cfg();
    if !fw.is_empty() {
        info!("deploy: fw_cfg opt/jeos: {} value(s)", fw.len());
        layers.push(("fw_cfg".to_owned(), fw));
    }
    let mut properties = Properties::new();
    let mut settings = Settings::default();
    for (source, props) in &layers {
        let (s, invalid) = Settings::from_properties(props);
        for i in invalid {
            info!("deploy: {source}: {i}");
        }
        settings.merge(s);
        for (k, v) in props {
            properties.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    for (k, v) in &config.properties {
        properties.entry(k.clone()).or_insert_with(|| v.clone());
    }
    Deployed {
        properties,
        settings,
    }
}

/// Writes the boot-time files under `/run/jeos/files`, with the template's owner and mode.
pub fn render_files(config: &InitConfig, deployed: &Deployed) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for file in &config.boot_files {
        if file.path.split('/').any(|c| c == "..") {
            info!("ignoring boot file {} (`..` in the path)", file.path);
            continue;
        }
        let source = file.template_path();
        let (text, meta) = match std::fs::read_to_string(&source)
            .and_then(|t| std::fs::metadata(&source).map(|m| (t, m)))
        {
            Ok(found) => found,
            Err(err) => {
                info!("boot file {}: cannot read {source}: {err}", file.path);
                continue;
            }
        };
        let lookup = |k: &str| deployed.properties.get(k).map(String::as_str);
        let rendered = match template::render(&text, lookup) {
            Ok(text) => text,
            Err(err) => {
                info!("boot file {}: {err}", file.path);
                continue;
            }
        };
        let target = file.runtime_path();
        let written = Path::new(&target)
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&target, rendered))
            .and_then(|()| std::os::unix::fs::chown(&target, Some(meta.uid()), Some(meta.gid())))
            .and_then(|()| {
                std::fs::set_permissions(
                    &target,
                    std::fs::Permissions::from_mode(meta.mode() & 0o7777),
                )
            });
        if let Err(err) = written {
            info!("cannot write boot file {target}: {err}");
        }
    }
}

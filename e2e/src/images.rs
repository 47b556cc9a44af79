//! Container images without a registry or a container engine: a root
//! filesystem assembled from our binaries (with the shared libraries they
//! link), written as a docker-archive (`docker save`'s format: a manifest,
//! an image config and one uncompressed layer), which `ctr images import`
//! loads into a real node's containerd.
//!
//! The archive format is written by hand (with the `tar` and `sha2` crates)
//! because no maintained crate writes image archives, and the format is three
//! small JSON documents beside the layer.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The unprivileged user our images run as (distroless's `nonroot`).
pub const NONROOT_UID: u32 = 65532;

/// Tag of every image the lab builds: not `latest`, so `IfNotPresent` pods use
/// the imported image instead of trying to pull.
pub const TAG: &str = "dev";
pub const UNDERSTUDY_REPOSITORY: &str = "localhost/understudy";
pub const TESTSERVER_REPOSITORY: &str = "localhost/understudy-testserver";
pub const PAUSE_REPOSITORY: &str = "localhost/understudy-pause";

/// The binaries the chart runs, all in one image.
pub const COMPONENT_BINARIES: &[&str] = &[
    "understudy-scheduler",
    "understudy-controllers",
    "understudy-proxy",
];
pub const TESTSERVER_BINARY: &str = "understudy-testserver";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("finding the shared libraries of {binary} with ldd: {reason}")]
    Ldd { binary: PathBuf, reason: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.into(),
        source,
    }
}

enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
}

/// A root filesystem to be, kept in memory: paths are absolute inside the image.
#[derive(Default)]
pub struct Rootfs {
    entries: BTreeMap<String, Entry>,
}

impl Rootfs {
    /// The base every image of ours has: /etc/passwd and /etc/group naming
    /// root and nonroot, and a world-writable /tmp.
    pub fn base() -> Self {
        let mut fs = Self::default();
        fs.file(
            "/etc/passwd",
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{NONROOT_UID}:{NONROOT_UID}:nonroot:/home/nonroot:/sbin/nologin\n"
            )
            .into_bytes(),
            0o644,
        );
        fs.file(
            "/etc/group",
            format!("root:x:0:\nnonroot:x:{NONROOT_UID}:\n").into_bytes(),
            0o644,
        );
        fs.dir("/tmp");
        fs.dir("/home/nonroot");
        fs
    }

    pub fn dir(&mut self, path: &str) {
        self.parents(path);
        self.entries.entry(path.to_string()).or_insert(Entry::Dir);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.parents(path);
        self.entries
            .insert(path.to_string(), Entry::File { data, mode });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.parents(path);
        self.entries
            .insert(path.to_string(), Entry::Symlink(target.into()));
    }

    fn parents(&mut self, path: &str) {
        let mut at = Path::new(path).parent();
        while let Some(dir) = at.filter(|d| *d != Path::new("/")) {
            self.entries
                .entry(dir.display().to_string())
                .or_insert(Entry::Dir);
            at = dir.parent();
        }
    }

    /// Copies a host binary into `dest` with every shared library it loads,
    /// each at the path the dynamic loader will look for it.
    pub fn binary_with_libraries(&mut self, binary: &Path, dest: &str) -> Result<(), ImageError> {
        let data = std::fs::read(binary).map_err(io_err(binary))?;
        self.file(dest, data, 0o755);
        for lib in shared_libraries(binary)? {
            let data = std::fs::read(&lib).map_err(io_err(&lib))?;
            self.file(&lib.display().to_string(), data, 0o755);
        }
        Ok(())
    }

    /// The layer: an uncompressed tar owned by root, timestamps zero, so the
    /// same inputs give the same digest.
    fn layer(&self) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        for (path, entry) in &self.entries {
            let name = path.trim_start_matches('/');
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            let result = match entry {
                Entry::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(if path == "/tmp" { 0o1777 } else { 0o755 });
                    header.set_size(0);
                    tar.append_data(&mut header, name, std::io::empty())
                }
                Entry::File { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    tar.append_data(&mut header, name, data.as_slice())
                }
                Entry::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    tar.append_link(&mut header, name, target)
                }
            };
            result.expect("writing a tar into memory");
        }
        tar.into_inner().expect("finishing a tar in memory")
    }
}

/// How the image runs: the OCI image config's `config` part we use.
#[derive(Clone, Debug, Default)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub user: Option<String>,
}

/// The shared libraries `binary` loads, from `ldd`: the dynamic loader's own
/// search is the one that counts, and ldd asks it.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, ImageError> {
    let output = std::process::Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| ImageError::Ldd {
            binary: binary.into(),
            reason: e.to_string(),
        })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        // A static binary: ldd says so and exits 1.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&output.stderr).contains("not a dynamic executable")
        {
            return Ok(vec![]);
        }
        return Err(ImageError::Ldd {
            binary: binary.into(),
            reason: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    parse_ldd(&text).map_err(|reason| ImageError::Ldd {
        binary: binary.into(),
        reason,
    })
}

fn parse_ldd(text: &str) -> Result<Vec<PathBuf>, String> {
    let mut libs = vec![];
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not found") {
            return Err(format!("a library is missing: {line}"));
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)", or the
        // loader itself: "/lib64/ld-linux-x86-64.so.2 (0x...)"; the vDSO has
        // no file.
        let path = match line.split_once(" => ") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(path) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(path));
        }
    }
    Ok(libs)
}

/// Writes `rootfs` as a docker-archive tagged `reference` and returns the
/// image config's digest (the image ID).
pub fn write_archive(
    rootfs: &Rootfs,
    reference: &str,
    run: &RunConfig,
    out: &Path,
) -> Result<String, ImageError> {
    let layer = rootfs.layer();
    let diff_id = hex(&Sha256::digest(&layer));
    let mut config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "1970-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "WorkingDir": "/",
        },
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{diff_id}")]},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": "understudy-lab images"}],
    });
    if !run.entrypoint.is_empty() {
        config["config"]["Entrypoint"] = serde_json::json!(run.entrypoint);
    }
    if !run.cmd.is_empty() {
        config["config"]["Cmd"] = serde_json::json!(run.cmd);
    }
    if let Some(user) = &run.user {
        config["config"]["User"] = serde_json::json!(user);
    }
    let config = serde_json::to_vec(&config).expect("static JSON");
    let config_digest = hex(&Sha256::digest(&config));
    let manifest = serde_json::json!([{
        "Config": format!("{config_digest}.json"),
        "RepoTags": [reference],
        "Layers": [format!("{diff_id}/layer.tar")],
    }]);
    let manifest = serde_json::to_vec(&manifest).expect("static JSON");

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    }
    let tmp = out.with_extension("tar.tmp");
    let file = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let mut add = |name: String, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, name, data)
    };
    add(format!("{config_digest}.json"), &config).map_err(io_err(&tmp))?;
    add(format!("{diff_id}/layer.tar"), &layer).map_err(io_err(&tmp))?;
    add("manifest.json".into(), &manifest).map_err(io_err(&tmp))?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, out).map_err(io_err(out))?;
    Ok(format!("sha256:{config_digest}"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One image the lab builds: its reference and archive file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltImage {
    pub reference: String,
    pub archive: PathBuf,
}

pub fn reference(repository: &str) -> String {
    format!("{repository}:{TAG}")
}

/// The sandbox (pause) image: the test server's `pause` mode.
pub fn build_pause(bin_dir: &Path, out_dir: &Path) -> Result<BuiltImage, ImageError> {
    let mut fs = Rootfs::base();
    fs.binary_with_libraries(&bin_dir.join(TESTSERVER_BINARY), "/pause")?;
    build(
        &fs,
        PAUSE_REPOSITORY,
        &RunConfig {
            entrypoint: vec!["/pause".into(), "pause".into()],
            ..Default::default()
        },
        out_dir,
        "pause.tar",
    )
}

/// The data-path tests' workload: answers with its pod name and the client's address.
pub fn build_testserver(bin_dir: &Path, out_dir: &Path) -> Result<BuiltImage, ImageError> {
    let mut fs = Rootfs::base();
    let dest = format!("/usr/local/bin/{TESTSERVER_BINARY}");
    fs.binary_with_libraries(&bin_dir.join(TESTSERVER_BINARY), &dest)?;
    build(
        &fs,
        TESTSERVER_REPOSITORY,
        &RunConfig {
            entrypoint: vec![dest],
            cmd: vec!["serve".into()],
            user: Some(format!("{NONROOT_UID}:{NONROOT_UID}")),
        },
        out_dir,
        "testserver.tar",
    )
}

/// Where Debian's iptables keeps its match and target extensions, which it
/// loads with dlopen (so ldd of the binary does not name them).
pub const XTABLES_DIR: &str = "/usr/lib/x86_64-linux-gnu/xtables";
/// The nf_tables iptables of Debian's `iptables` package: one binary, the
/// tools are its names.
pub const XTABLES_NFT: &str = "/usr/sbin/xtables-nft-multi";
/// Both families': a dual-stack proxy writes IPv6's rules with ip6tables.
pub const IPTABLES_TOOLS: &[&str] = &[
    "iptables",
    "iptables-restore",
    "iptables-save",
    "ip6tables",
    "ip6tables-restore",
    "ip6tables-save",
];

/// The host's iptables (nf_tables backend, as kube-proxy's image ships it),
/// assembled by hand as everything else here: the multi-call binary, its
/// tool names as links (no /etc/alternatives in an image), every extension
/// and the libraries of each, found with ldd.
pub fn add_iptables(fs: &mut Rootfs) -> Result<(), ImageError> {
    let binary = Path::new(XTABLES_NFT);
    fs.binary_with_libraries(binary, XTABLES_NFT)?;
    for tool in IPTABLES_TOOLS {
        fs.symlink(&format!("/usr/sbin/{tool}"), "xtables-nft-multi");
    }
    let dir = Path::new(XTABLES_DIR);
    let mut extensions: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "so"))
        .collect();
    extensions.sort();
    for extension in extensions {
        fs.binary_with_libraries(&extension, &extension.display().to_string())?;
    }
    // "-p tcp" and friends are looked up here before iptables' own table.
    if Path::new("/etc/protocols").exists() {
        let data = std::fs::read("/etc/protocols").map_err(io_err(Path::new("/etc/protocols")))?;
        fs.file("/etc/protocols", data, 0o644);
    }
    Ok(())
}

/// Debian's nft (the `nftables` package), which the proxy's nftables mode
/// runs: one binary and the libraries ldd names (libnftables and what it
/// links; no plugins are loaded at run time).
pub const NFT: &str = "/usr/sbin/nft";

pub fn add_nftables(fs: &mut Rootfs) -> Result<(), ImageError> {
    fs.binary_with_libraries(Path::new(NFT), NFT)
}

/// What the proxy's IPVS mode runs besides netlink: Debian's `ipset`
/// (its sets), `ip` from iproute2 (the dummy interface's addresses) and
/// kmod's `modprobe` (loading ip_vs where it is a module), each with the
/// libraries ldd names.
pub const IPVS_TOOLS: &[(&str, &str)] = &[
    ("/usr/sbin/ipset", "/usr/sbin/ipset"),
    ("/bin/ip", "/usr/sbin/ip"),
    ("/bin/kmod", "/usr/bin/kmod"),
];

pub fn add_ipvs_tools(fs: &mut Rootfs) -> Result<(), ImageError> {
    for (host, image) in IPVS_TOOLS {
        fs.binary_with_libraries(Path::new(host), image)?;
    }
    // kmod is a multi-call binary: modprobe is one of its names.
    fs.symlink("/usr/sbin/modprobe", "../bin/kmod");
    Ok(())
}

/// The components' image, as the Dockerfile builds it: every binary on PATH,
/// run as nonroot; iptables and nft for the proxy (whose pod runs as root).
pub fn build_understudy(bin_dir: &Path, out_dir: &Path) -> Result<BuiltImage, ImageError> {
    let mut fs = Rootfs::base();
    for name in COMPONENT_BINARIES {
        fs.binary_with_libraries(&bin_dir.join(name), &format!("/usr/local/bin/{name}"))?;
    }
    add_iptables(&mut fs)?;
    add_nftables(&mut fs)?;
    add_ipvs_tools(&mut fs)?;
    build(
        &fs,
        UNDERSTUDY_REPOSITORY,
        &RunConfig {
            user: Some(format!("{NONROOT_UID}:{NONROOT_UID}")),
            ..Default::default()
        },
        out_dir,
        "understudy.tar",
    )
}

fn build(
    fs: &Rootfs,
    repository: &str,
    run: &RunConfig,
    out_dir: &Path,
    file: &str,
) -> Result<BuiltImage, ImageError> {
    let reference = reference(repository);
    let archive = out_dir.join(file);
    write_archive(fs, &reference, run, &archive)?;
    Ok(BuiltImage { reference, archive })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_every_library_path() {
        let text = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            parse_ldd(text).unwrap(),
            vec![
                PathBuf::from("/lib/x86_64-linux-gnu/libgcc_s.so.1"),
                PathBuf::from("/lib/x86_64-linux-gnu/libc.so.6"),
                PathBuf::from("/lib64/ld-linux-x86-64.so.2"),
            ]
        );
        assert!(
            parse_ldd("\tlibfoo.so => not found\n")
                .unwrap_err()
                .contains("libfoo")
        );
    }

    #[test]
    fn archive_holds_manifest_config_and_layer_with_matching_digests() {
        let dir = tempfile::tempdir().unwrap();
        let mut fs = Rootfs::base();
        fs.file(
            "/usr/local/bin/hello",
            b"#!/bin/sh\necho hi\n".to_vec(),
            0o755,
        );
        fs.symlink("/bin/hi", "/usr/local/bin/hello");
        let out = dir.path().join("img.tar");
        let run = RunConfig {
            entrypoint: vec!["/usr/local/bin/hello".into()],
            user: Some("65532:65532".into()),
            ..Default::default()
        };
        let id = write_archive(&fs, "localhost/hello:dev", &run, &out).unwrap();

        let mut files = BTreeMap::new();
        let mut archive = tar::Archive::new(std::fs::File::open(&out).unwrap());
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let mut data = vec![];
            std::io::Read::read_to_end(&mut entry, &mut data).unwrap();
            files.insert(entry.path().unwrap().display().to_string(), data);
        }
        let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest[0]["RepoTags"][0], "localhost/hello:dev");
        let config_name = manifest[0]["Config"].as_str().unwrap();
        let config = &files[config_name];
        assert_eq!(format!("sha256:{}", hex(&Sha256::digest(config))), id);
        let config: serde_json::Value = serde_json::from_slice(config).unwrap();
        assert_eq!(config["config"]["User"], "65532:65532");
        let layer = &files[manifest[0]["Layers"][0].as_str().unwrap()];
        assert_eq!(
            config["rootfs"]["diff_ids"][0],
            format!("sha256:{}", hex(&Sha256::digest(layer)))
        );

        let mut paths = BTreeMap::new();
        let mut layer = tar::Archive::new(layer.as_slice());
        for entry in layer.entries().unwrap() {
            let entry = entry.unwrap();
            let header = entry.header();
            paths.insert(
                entry.path().unwrap().display().to_string(),
                (header.uid().unwrap(), header.mode().unwrap()),
            );
        }
        assert_eq!(paths["usr/local/bin/hello"], (0, 0o755));
        assert_eq!(paths["tmp"].1, 0o1777);
        assert!(paths.contains_key("usr/local") && paths.contains_key("etc/passwd"));
        assert!(paths.contains_key("bin/hi"));

        // The same inputs, the same image.
        let again = write_archive(&fs, "localhost/hello:dev", &run, &dir.path().join("b.tar"));
        assert_eq!(again.unwrap(), id);
    }

    #[test]
    fn iptables_comes_with_its_tools_extensions_and_libraries() {
        let mut fs = Rootfs::default();
        add_iptables(&mut fs).unwrap();
        for path in [
            "/usr/sbin/iptables-restore",
            "/usr/sbin/ip6tables-restore",
            "/usr/lib/x86_64-linux-gnu/xtables/libxt_comment.so",
            "/usr/lib/x86_64-linux-gnu/xtables/libxt_statistic.so",
            "/usr/lib/x86_64-linux-gnu/xtables/libipt_REJECT.so",
        ] {
            assert!(fs.entries.contains_key(path), "{path}");
        }
        assert!(fs.entries.keys().any(|p| p.contains("libnftnl.so")));
    }

    #[test]
    fn the_ipvs_modes_tools_come_with_their_libraries() {
        let mut fs = Rootfs::base();
        add_ipvs_tools(&mut fs).unwrap();
        for path in ["/usr/sbin/ipset", "/usr/sbin/ip", "/usr/bin/kmod"] {
            assert!(fs.entries.contains_key(path), "{path}");
        }
        assert!(matches!(
            fs.entries.get("/usr/sbin/modprobe"),
            Some(Entry::Symlink(target)) if target == "../bin/kmod"
        ));
        assert!(fs.entries.keys().any(|p| p.contains("libipset.so")));
    }

    #[test]
    fn nft_comes_with_its_libraries() {
        let mut fs = Rootfs::default();
        add_nftables(&mut fs).unwrap();
        assert!(fs.entries.contains_key("/usr/sbin/nft"));
        for lib in [
            "libnftables.so",
            "libnftnl.so",
            "libmnl.so",
            "libjansson.so",
        ] {
            assert!(fs.entries.keys().any(|p| p.contains(lib)), "{lib}");
        }
    }

    #[test]
    fn a_binary_comes_with_its_loader_and_libraries() {
        let mut fs = Rootfs::default();
        fs.binary_with_libraries(Path::new("/bin/sh"), "/bin/sh")
            .unwrap();
        assert!(
            fs.entries.keys().any(|p| p.contains("libc.so")),
            "{:?}",
            fs.entries.keys().collect::<Vec<_>>()
        );
        assert!(fs.entries.keys().any(|p| p.contains("ld-linux")));
    }
}

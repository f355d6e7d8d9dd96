//! The images keelson's tests, CI and newcomers run on containerd, built locally (no
//! registry is reachable) from the host's static busybox as one OCI image layout:
//!
//! - `localhost/keelson/web:1` and `:2`: busybox's tools, and a default command that
//!   serves `/www` over HTTP on port 80 and keeps running; the two differ only in the
//!   page they serve (`keelson web 1` / `keelson web 2`).
//! - `localhost/keelson/pause:1`: the sandbox image, which sleeps until it is stopped.
//!
//! All three share the busybox layer; the web images add a layer with their page.
//! Layers are plain (uncompressed) tars with fixed timestamps, so a build is the same
//! bytes every time and importing it twice changes nothing.

use ring::digest::{digest, SHA256};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

pub const WEB_1: &str = "localhost/keelson/web:1";
pub const WEB_2: &str = "localhost/keelson/web:2";
pub const PAUSE: &str = "localhost/keelson/pause:1";

const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("listing busybox's applets with {path}: {message}")]
    Applets { path: String, message: String },
    #[error("building the image archive: {0}")]
    Archive(std::io::Error),
    #[error("importing {path} into containerd: {message}")]
    Import { path: String, message: String },
}

/// A content-addressed blob of the layout.
struct Blob {
    media_type: &'static str,
    bytes: Vec<u8>,
}

impl Blob {
    fn digest(&self) -> String {
        let hash = digest(&SHA256, &self.bytes);
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest(), "size": self.bytes.len()})
    }
}

/// A tar archive with deterministic headers (root-owned, time 0).
struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    fn new() -> TarBuilder {
        TarBuilder(tar::Builder::new(Vec::new()))
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header
    }

    fn dir(&mut self, path: &str, mode: u32) -> std::io::Result<()> {
        let mut header = Self::header(tar::EntryType::Directory, mode, 0);
        self.0.append_data(&mut header, path, std::io::empty())
    }

    fn file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> std::io::Result<()> {
        let mut header = Self::header(tar::EntryType::Regular, mode, bytes.len() as u64);
        self.0.append_data(&mut header, path, bytes)
    }

    fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut header, path, target)
    }

    fn finish(self) -> std::io::Result<Vec<u8>> {
        self.0.into_inner()
    }
}

/// The busybox binary's applets (`busybox --list`), each becoming `/bin/NAME`.
fn applets(busybox: &Path) -> Result<Vec<String>, ImageError> {
    let failed = |message: String| ImageError::Applets { path: busybox.display().to_string(), message };
    let output = std::process::Command::new(busybox).arg("--list").output().map_err(|e| failed(e.to_string()))?;
    if !output.status.success() {
        return Err(failed(String::from_utf8_lossy(&output.stderr).into_owned()));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::trim)
        .filter(|name| !name.is_empty() && *name != "busybox" && !name.contains('/'))
        .map(str::to_owned)
        .collect())
}

/// The base layer: a root filesystem of busybox and its applets.
fn busybox_layer(busybox: &Path) -> Result<Blob, ImageError> {
    let binary =
        std::fs::read(busybox).map_err(|source| ImageError::Read { path: busybox.display().to_string(), source })?;
    let applets = applets(busybox)?;
    let build = || -> std::io::Result<Vec<u8>> {
        let mut tar = TarBuilder::new();
        for (dir, mode) in [("bin", 0o755), ("dev", 0o755), ("etc", 0o755), ("proc", 0o755), ("root", 0o700)] {
            tar.dir(dir, mode)?;
        }
        for (dir, mode) in [("sys", 0o755), ("tmp", 0o1777), ("var", 0o755), ("www", 0o755)] {
            tar.dir(dir, mode)?;
        }
        tar.file("bin/busybox", 0o755, &binary)?;
        for applet in &applets {
            tar.symlink(&format!("bin/{applet}"), "busybox")?;
        }
        tar.file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")?;
        tar.file("etc/group", 0o644, b"root:x:0:\nnobody:x:65534:\n")?;
        tar.finish()
    };
    Ok(Blob { media_type: LAYER_MEDIA_TYPE, bytes: build().map_err(ImageError::Archive)? })
}

/// The layer with a web image's page.
fn page_layer(page: &str) -> Result<Blob, ImageError> {
    let build = || -> std::io::Result<Vec<u8>> {
        let mut tar = TarBuilder::new();
        tar.dir("www", 0o755)?;
        tar.file("www/index.html", 0o644, page.as_bytes())?;
        tar.finish()
    };
    Ok(Blob { media_type: LAYER_MEDIA_TYPE, bytes: build().map_err(ImageError::Archive)? })
}

/// The `GOARCH` name of this machine's architecture, as image platforms name it.
fn oci_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// An image's config and manifest blobs, and its entry in the layout's index.
fn image(name: &str, layers: &[&Blob], cmd: &[&str], ports: &[&str], blobs: &mut Vec<Blob>) -> Value {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest()).collect();
    let exposed: BTreeMap<String, Value> = ports.iter().map(|p| (p.to_string(), json!({}))).collect();
    let config = Blob {
        media_type: CONFIG_MEDIA_TYPE,
        bytes: serde_json::to_vec(&json!({
            "architecture": oci_architecture(),
            "os": "linux",
            "config": {"Env": [PATH_ENV], "Cmd": cmd, "WorkingDir": "/", "ExposedPorts": exposed},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "keelson test-images", "comment": name}],
        }))
        .expect("serialising JSON values cannot fail"),
    };
    let manifest = Blob {
        media_type: MANIFEST_MEDIA_TYPE,
        bytes: serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.descriptor(),
            "layers": layers.iter().map(|l| l.descriptor()).collect::<Vec<_>>(),
        }))
        .expect("serialising JSON values cannot fail"),
    };
    let tag = name.rsplit_once(':').map_or("latest", |(_, tag)| tag);
    let mut entry = manifest.descriptor();
    entry["platform"] = json!({"architecture": oci_architecture(), "os": "linux"});
    entry["annotations"] = json!({"io.containerd.image.name": name, "org.opencontainers.image.ref.name": tag});
    blobs.push(config);
    blobs.push(manifest);
    entry
}

/// Builds the three test images as one OCI image layout archive (`ctr images import`
/// reads it) from the busybox binary at `busybox` (Debian's `busybox-static`).
pub fn build_archive(busybox: &Path) -> Result<Vec<u8>, ImageError> {
    let base = busybox_layer(busybox)?;
    let pages = [page_layer("keelson web 1\n")?, page_layer("keelson web 2\n")?];
    let web_cmd = ["httpd", "-f", "-v", "-p", "80", "-h", "/www"];
    // The sandbox holds the pod's namespaces; it exits on SIGTERM as pause does.
    let pause_cmd = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 86400 & wait $!; done"];
    let mut blobs = Vec::new();
    let manifests = vec![
        image(WEB_1, &[&base, &pages[0]], &web_cmd, &["80/tcp"], &mut blobs),
        image(WEB_2, &[&base, &pages[1]], &web_cmd, &["80/tcp"], &mut blobs),
        image(PAUSE, &[&base], &pause_cmd, &[], &mut blobs),
    ];
    blobs.push(base);
    blobs.extend(pages);
    let index =
        json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});

    let build = || -> std::io::Result<Vec<u8>> {
        let mut tar = TarBuilder::new();
        tar.file("oci-layout", 0o644, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        tar.file("index.json", 0o644, index.to_string().as_bytes())?;
        tar.dir("blobs", 0o755)?;
        tar.dir("blobs/sha256", 0o755)?;
        let mut written = std::collections::BTreeSet::new();
        for blob in &blobs {
            let digest = blob.digest();
            if written.insert(digest.clone()) {
                let hex = digest.trim_start_matches("sha256:");
                tar.file(&format!("blobs/sha256/{hex}"), 0o644, &blob.bytes)?;
            }
        }
        tar.finish()
    };
    build().map_err(ImageError::Archive)
}

/// Imports an archive from [`build_archive`] into containerd's CRI namespace (`k8s.io`)
/// with `ctr`, which unpacks it for the CRI plugin's snapshotter.
pub fn import(archive: &Path, containerd_socket: &Path) -> Result<(), ImageError> {
    let failed = |message: String| ImageError::Import { path: archive.display().to_string(), message };
    let output = std::process::Command::new("ctr")
        .arg("--address")
        .arg(containerd_socket)
        .args(["--namespace", "k8s.io", "images", "import"])
        .arg(archive)
        .output()
        .map_err(|e| failed(format!("running ctr: {e}")))?;
    if !output.status.success() {
        return Err(failed(String::from_utf8_lossy(&output.stderr).trim().to_owned()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_busybox(dir: &Path) -> std::path::PathBuf {
        let path = dir.join("busybox");
        std::fs::write(&path, "#!/bin/sh\nprintf 'sh\\nhttpd\\nsleep\\nbusybox\\n'\n").unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        path
    }

    fn entries(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
        let mut reader = tar::Archive::new(archive);
        let mut out = BTreeMap::new();
        for entry in reader.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut entry, &mut bytes).unwrap();
            out.insert(path, bytes);
        }
        out
    }

    #[test]
    fn the_layout_names_three_images_whose_blobs_match_their_digests() {
        let dir = tempfile::tempdir().unwrap();
        let archive = build_archive(&fake_busybox(dir.path())).unwrap();
        assert_eq!(archive, build_archive(&fake_busybox(dir.path())).unwrap(), "builds are reproducible");
        let files = entries(&archive);
        let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
        let names: Vec<&str> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["annotations"]["io.containerd.image.name"].as_str().unwrap())
            .collect();
        assert_eq!(names, [WEB_1, WEB_2, PAUSE]);
        for (path, bytes) in &files {
            if let Some(hex) = path.strip_prefix("blobs/sha256/") {
                let blob = Blob { media_type: LAYER_MEDIA_TYPE, bytes: bytes.clone() };
                assert_eq!(blob.digest(), format!("sha256:{hex}"));
            }
        }
        // Each web image's config points at the shared base layer and its own page.
        let blob = |digest: &str| -> Value {
            serde_json::from_slice(&files[&format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"))]).unwrap()
        };
        let web1 = blob(index["manifests"][0]["digest"].as_str().unwrap());
        let web2 = blob(index["manifests"][1]["digest"].as_str().unwrap());
        assert_eq!(web1["layers"][0], web2["layers"][0]);
        assert_ne!(web1["layers"][1], web2["layers"][1]);
        let config = blob(web1["config"]["digest"].as_str().unwrap());
        assert_eq!(config["config"]["Cmd"][0], "httpd");
        assert_eq!(config["rootfs"]["diff_ids"][0], web1["layers"][0]["digest"]);
    }

    #[test]
    fn the_base_layer_links_every_applet_to_busybox() {
        let dir = tempfile::tempdir().unwrap();
        let layer = busybox_layer(&fake_busybox(dir.path())).unwrap();
        let mut archive = tar::Archive::new(&layer.bytes[..]);
        let mut links = BTreeMap::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            if entry.header().entry_type() == tar::EntryType::Symlink {
                let target = entry.link_name().unwrap().unwrap().display().to_string();
                links.insert(entry.path().unwrap().display().to_string(), target);
            }
        }
        let expected: BTreeMap<String, String> =
            ["bin/httpd", "bin/sh", "bin/sleep"].iter().map(|p| (p.to_string(), "busybox".to_string())).collect();
        assert_eq!(links, expected);
    }
}

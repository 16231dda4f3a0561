//! Two hosts on one machine (DESIGN.md §7): each host's processes run in
//! its own network namespace (`netns::Sites`) and in a mount namespace
//! where the other host's folder is covered by an empty tmpfs, so nothing
//! passes between them except over the link.

use std::path::{Path, PathBuf};
use std::process::Command;

use standby_lifecycle::Site;

use super::netns::Sites;
use super::Run;

pub struct Hosts {
    pub net: Sites,
    /// Each host's own folder (its deployment goes in `home`).
    pub primary: PathBuf,
    pub recovery: PathBuf,
}

impl Hosts {
    /// Two hosts under `root`.
    pub fn create(root: &Path) -> Hosts {
        let hosts =
            Hosts { net: Sites::create(), primary: root.join("primary-host"), recovery: root.join("recovery-host") };
        for folder in [&hosts.primary, &hosts.recovery] {
            std::fs::create_dir_all(folder).unwrap();
        }
        hosts
    }

    pub fn folder(&self, site: Site) -> &Path {
        match site {
            Site::Primary => &self.primary,
            Site::Recovery => &self.recovery,
        }
    }

    /// The deployment folder of `site`'s host.
    pub fn home(&self, site: Site) -> PathBuf {
        self.folder(site).join("home")
    }

    /// Where `site`'s host listens.
    pub fn listen(&self, site: Site) -> String {
        let address = match site {
            Site::Primary => &self.net.primary_address,
            Site::Recovery => &self.net.recovery_address,
        };
        format!("{address}:7450")
    }

    /// `program` run on `site`'s host: in its namespace, the other host's
    /// folder hidden.
    pub fn command(&self, site: Site, program: &str) -> Command {
        let netns = match site {
            Site::Primary => &self.net.primary,
            Site::Recovery => &self.net.recovery,
        };
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", netns, "unshare", "--mount", "--propagation", "private", "--"])
            .args(["sh", "-c", r#"mount -t tmpfs -o mode=700 hidden "$1" && shift && exec "$@""#, "sh"])
            .arg(self.folder(site.other()))
            .arg(program);
        command
    }

    /// `standby` with `arguments` on `site`'s host, with `environment`.
    pub fn run(&self, site: Site, arguments: &[&str], environment: &[(&str, &str)]) -> Run {
        let output = self
            .command(site, env!("CARGO_BIN_EXE_standby"))
            .args(arguments)
            .envs(environment.iter().copied())
            .output()
            .expect("standby runs");
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// The daemon of `site`'s host.
    pub fn serve(&self, site: Site) -> super::daemon::Daemon {
        super::daemon::Daemon::start_command(&self.home(site), self.command(site, env!("CARGO_BIN_EXE_standby")))
    }

    /// What `site`'s host sees of the other host's folder.
    pub fn sees_of_the_other(&self, site: Site) -> Vec<String> {
        let output = self.command(site, "ls").arg("-A").arg(self.folder(site.other())).output().unwrap();
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
    }
}

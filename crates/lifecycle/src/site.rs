//! Where a machine runs: its two [`Site`]s, and the [`Instance`]s of it
//! that can run at once (at each site, and a drill copy).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::UnknownName;

/// One of a machine's two sites. Which host or folder a site is belongs to
/// the deployment's configuration; the lifecycle only knows there are two.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Site {
    Primary,
    Recovery,
}

/// Both sites, primary first.
pub const SITES: [Site; 2] = [Site::Primary, Site::Recovery];

impl Site {
    pub fn name(self) -> &'static str {
        match self {
            Site::Primary => "primary",
            Site::Recovery => "recovery",
        }
    }

    pub fn parse(name: &str) -> Option<Site> {
        SITES.into_iter().find(|site| site.name() == name)
    }

    /// The other site of the two.
    pub fn other(self) -> Site {
        match self {
            Site::Primary => Site::Recovery,
            Site::Recovery => Site::Primary,
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Site {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Site, UnknownName> {
        Site::parse(name).ok_or_else(|| UnknownName { kind: "site (primary or recovery)", name: name.to_string() })
    }
}

/// A copy of a machine that can run: at its primary site, at its recovery
/// site, or a drill copy (test failover), which runs at the site that holds
/// the machine's replica, isolated from production networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Instance {
    Primary,
    Recovery,
    Drill,
}

/// Every instance, for exhaustive checks and adoption.
pub const INSTANCES: [Instance; 3] = [Instance::Primary, Instance::Recovery, Instance::Drill];

impl Instance {
    pub fn name(self) -> &'static str {
        match self {
            Instance::Primary => "primary",
            Instance::Recovery => "recovery",
            Instance::Drill => "drill",
        }
    }

    pub fn parse(name: &str) -> Option<Instance> {
        INSTANCES.into_iter().find(|instance| instance.name() == name)
    }

    /// The site this instance runs at, for a machine active at `active`:
    /// a drill runs where the replica is, the other site.
    pub fn site(self, active: Site) -> Site {
        match self {
            Instance::Primary => Site::Primary,
            Instance::Recovery => Site::Recovery,
            Instance::Drill => active.other(),
        }
    }

    /// The site this instance is named after, unless it is a drill.
    pub fn as_site(self) -> Option<Site> {
        match self {
            Instance::Primary => Some(Site::Primary),
            Instance::Recovery => Some(Site::Recovery),
            Instance::Drill => None,
        }
    }
}

impl From<Site> for Instance {
    fn from(site: Site) -> Instance {
        match site {
            Site::Primary => Instance::Primary,
            Site::Recovery => Instance::Recovery,
        }
    }
}

impl fmt::Display for Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_serde_agrees_with_them() {
        for site in SITES {
            assert_eq!(Site::parse(site.name()), Some(site));
            assert_eq!(site.other().other(), site);
            assert_ne!(site.other(), site);
            assert_eq!(serde_json::to_string(&site).unwrap(), format!("\"{site}\""));
            assert_eq!(Instance::from(site).site(site.other()), site);
            assert_eq!(Instance::from(site).as_site(), Some(site));
            assert_eq!(Instance::Drill.site(site), site.other());
        }
        for instance in INSTANCES {
            assert_eq!(Instance::parse(instance.name()), Some(instance));
            assert_eq!(serde_json::to_string(&instance).unwrap(), format!("\"{instance}\""));
        }
        assert!("elsewhere".parse::<Site>().unwrap_err().to_string().contains("elsewhere"));
    }
}

//! Turning the VAULT argument (a path, `file://`, `az://`, `s3://` or `gs://`
//! URL) into a backend.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use super::{Backend, LocalBackend, ObjectStoreBackend};

/// Where a vault lives, as the operator named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaultLocation {
    Local(PathBuf),
    Azure { container: String, prefix: String },
    S3 { bucket: String, prefix: String },
    Gcs { bucket: String, prefix: String },
}

impl VaultLocation {
    pub fn parse(text: &str) -> Result<Self, String> {
        let Some((scheme, rest)) = text.split_once("://") else {
            if text.is_empty() {
                return Err("vault location is empty".into());
            }
            return Ok(VaultLocation::Local(PathBuf::from(text)));
        };
        let split = |rest: &str| -> Result<(String, String), String> {
            let (head, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if head.is_empty() {
                return Err(format!("vault URL {text} names no container or bucket"));
            }
            Ok((head.to_string(), prefix.trim_matches('/').to_string()))
        };
        match scheme {
            "file" => {
                if rest.is_empty() {
                    return Err(format!("vault URL {text} names no path"));
                }
                Ok(VaultLocation::Local(PathBuf::from(rest)))
            }
            "az" | "azure" => {
                let (container, prefix) = split(rest)?;
                check_container_name(&container)?;
                Ok(VaultLocation::Azure { container, prefix })
            }
            "s3" => split(rest).map(|(bucket, prefix)| VaultLocation::S3 { bucket, prefix }),
            "gs" => split(rest).map(|(bucket, prefix)| VaultLocation::Gcs { bucket, prefix }),
            other => Err(format!("unknown vault URL scheme '{other}': use a path, file://, az://, s3://, gs:// or standby:// (another site's host)")),
        }
    }
}

/// Azure's rule: 3–63 lowercase letters, digits and single hyphens, starting
/// and ending with a letter or digit.
fn check_container_name(name: &str) -> Result<(), String> {
    let valid = (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--");
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid Azure container name: use 3 to 63 lowercase letters, digits and single hyphens"
        ))
    }
}

/// Opens a backend for `location`. Object stores are configured from the
/// environment: `AZURE_STORAGE_ACCOUNT_NAME`/`AZURE_STORAGE_ACCOUNT_KEY`, or
/// `AZURE_STORAGE_USE_EMULATOR=true` (+ `AZURITE_BLOB_STORAGE_URL`) for
/// Azurite; `AWS_*` for S3; `GOOGLE_*` for GCS. Errors are one line.
pub fn open_location(location: &VaultLocation) -> Result<Arc<dyn Backend>, String> {
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    };
    let client =
        ClientOptions::new().with_connect_timeout(Duration::from_secs(5)).with_timeout(Duration::from_secs(120));
    match location {
        VaultLocation::Local(path) => Ok(Arc::new(LocalBackend::new(path.clone()))),
        VaultLocation::Azure { container, prefix } => {
            let builder = object_store::azure::MicrosoftAzureBuilder::from_env()
                .with_container_name(container)
                .with_retry(retry)
                .with_client_options(client.with_allow_http(true));
            let endpoint = azure_endpoint();
            let store = builder.build().map_err(|e| {
                format!("cannot use Azure vault az://{container}: {e} (set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_USE_EMULATOR=true for Azurite)")
            })?;
            let description = format!("az://{container}/{prefix} at {endpoint}");
            Ok(Arc::new(ObjectStoreBackend::new(Arc::new(store), prefix, description, endpoint)))
        }
        VaultLocation::S3 { bucket, prefix } => {
            // Client options set here replace those from the environment:
            // plain HTTP (a store on a private network) only when asked.
            let allow_http = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v == "true" || v == "1");
            let store = object_store::aws::AmazonS3Builder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(client.with_allow_http(allow_http))
                .build()
                .map_err(|e| format!("cannot use S3 vault s3://{bucket}: {e} (set AWS_REGION and credentials)"))?;
            let endpoint = std::env::var("AWS_ENDPOINT").unwrap_or_else(|_| format!("s3://{bucket}"));
            let description = format!("s3://{bucket}/{prefix}");
            Ok(Arc::new(ObjectStoreBackend::new(Arc::new(store), prefix, description, endpoint)))
        }
        VaultLocation::Gcs { bucket, prefix } => {
            let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(bucket)
                .with_retry(retry)
                .with_client_options(client)
                .build()
                .map_err(|e| format!("cannot use GCS vault gs://{bucket}: {e} (set GOOGLE_SERVICE_ACCOUNT)"))?;
            let description = format!("gs://{bucket}/{prefix}");
            Ok(Arc::new(ObjectStoreBackend::new(Arc::new(store), prefix, description.clone(), description)))
        }
    }
}

fn azure_endpoint() -> String {
    let emulator = std::env::var("AZURE_STORAGE_USE_EMULATOR").map(|v| v == "true" || v == "1").unwrap_or(false);
    if emulator {
        return std::env::var("AZURITE_BLOB_STORAGE_URL").unwrap_or_else(|_| "http://127.0.0.1:10000".to_string());
    }
    if let Ok(endpoint) = std::env::var("AZURE_STORAGE_ENDPOINT") {
        return endpoint;
    }
    let account = std::env::var("AZURE_STORAGE_ACCOUNT_NAME").unwrap_or_else(|_| "<account>".to_string());
    format!("https://{account}.blob.core.windows.net")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme_and_refuses_unknown_ones() {
        assert_eq!(VaultLocation::parse("/srv/vault").unwrap(), VaultLocation::Local("/srv/vault".into()));
        assert_eq!(VaultLocation::parse("file:///srv/vault").unwrap(), VaultLocation::Local("/srv/vault".into()));
        assert_eq!(
            VaultLocation::parse("az://drsite/site-b/").unwrap(),
            VaultLocation::Azure { container: "drsite".into(), prefix: "site-b".into() }
        );
        assert!(VaultLocation::parse("ftp://host/x").unwrap_err().contains("unknown vault URL scheme 'ftp'"));
        assert!(VaultLocation::parse("az:///x").is_err());
        assert!(VaultLocation::parse("az://dr/x").unwrap_err().contains("not a valid Azure container name"));
        assert!(VaultLocation::parse("az://Upper-case/x").is_err());
    }
}

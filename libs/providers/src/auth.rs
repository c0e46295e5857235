//! The cloud providers' authentication, with maintained crates doing the cryptography:
//!
//! - **Vertex AI**: the provider key (`file:` reference) is a Google service-account key file;
//!   an RS256 JWT signed with its private key (`jsonwebtoken`) is exchanged at its `token_uri`
//!   for an OAuth2 access token, which is cached and refreshed five minutes before it expires.
//!   A key that is not a service-account file is used as an access token as it is (the output
//!   of `gcloud auth print-access-token`, say).
//! - **Bedrock**: SigV4 (`aws-sigv4`) over the whole request, body hash included
//!   (`x-amz-content-sha256`), with credentials (`aws-credential-types`) from the environment
//!   (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`) or else from the shared
//!   credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`) under the
//!   provider's `aws_profile`, `AWS_PROFILE`, or `default`. Both are read at each request, so
//!   rotated credentials are picked up without a restart.
//!
//! No error here ever contains a key, a token or a credential.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use bytes::Bytes;
use http_body_util::Full;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use switchyard_core::ErrorClass;
use tokio::sync::Mutex;

use crate::error::{Phase, UpstreamError};

/// The OAuth2 scope Vertex AI needs.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// A token is refreshed this long before it expires.
pub const REFRESH_MARGIN: Duration = Duration::from_secs(300);

fn auth_error(message: impl Into<String>) -> UpstreamError {
    UpstreamError::new(ErrorClass::UpstreamAuth, Phase::Connect, message)
}

/// The fields of a Google service-account key file that the token exchange needs.
#[derive(Deserialize)]
pub struct ServiceAccount {
    /// `service_account`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The account.
    pub client_email: String,
    /// PEM PKCS#8 RSA key.
    pub private_key: String,
    /// Names the key in the JWT header.
    #[serde(default)]
    pub private_key_id: Option<String>,
    /// Where the JWT is exchanged.
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    /// The service account in `key`, `None` when the key is not a service-account file.
    pub fn parse(key: &str) -> Option<ServiceAccount> {
        let sa: ServiceAccount = serde_json::from_str(key.trim()).ok()?;
        (sa.kind == "service_account").then_some(sa)
    }

    /// The signed JWT asking for a token valid from `now` for one hour.
    pub fn assertion(&self, now: SystemTime) -> Result<String, UpstreamError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            iss: &'a str,
            scope: &'a str,
            aud: &'a str,
            iat: u64,
            exp: u64,
        }
        let iat = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = Claims {
            iss: &self.client_email,
            scope: CLOUD_PLATFORM_SCOPE,
            aud: &self.token_uri,
            iat,
            exp: iat + 3600,
        };
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        header.kid = self.private_key_id.clone();
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.private_key.as_bytes())
            .map_err(|_| auth_error("the service-account private key is not a PEM RSA key"))?;
        jsonwebtoken::encode(&header, &claims, &key)
            .map_err(|e| auth_error(format!("cannot sign the service-account JWT: {e}")))
    }

    /// The token request: the JWT-bearer grant, form-encoded.
    pub fn token_request(
        &self,
        now: SystemTime,
    ) -> Result<http::Request<Full<Bytes>>, UpstreamError> {
        let assertion = self.assertion(now)?;
        let body = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer")
            .append_pair("assertion", &assertion)
            .finish();
        http::Request::post(self.token_uri.as_str())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| auth_error("the service account's token_uri is not a valid URL"))
    }
}

/// The answer of a token endpoint.
#[derive(Deserialize)]
pub struct TokenAnswer {
    /// The bearer token.
    pub access_token: String,
    /// Seconds it stays valid.
    #[serde(default = "default_expiry")]
    pub expires_in: u64,
}

fn default_expiry() -> u64 {
    3600
}

/// Parses a token endpoint's answer; its error (`{"error", "error_description"}`) says why.
pub fn parse_token_answer(
    status: http::StatusCode,
    body: &[u8],
) -> Result<TokenAnswer, UpstreamError> {
    if status.is_success()
        && let Ok(t) = serde_json::from_slice::<TokenAnswer>(body)
    {
        return Ok(t);
    }
    let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let why = v["error_description"]
        .as_str()
        .or(v["error"].as_str())
        .unwrap_or("no reason given");
    let why: String = why.chars().take(200).collect();
    let class = if status.is_server_error() {
        ErrorClass::Unavailable
    } else {
        ErrorClass::UpstreamAuth
    };
    let mut e = UpstreamError::new(
        class,
        Phase::Connect,
        format!("the token exchange answered {}: {why}", status.as_u16()),
    );
    e.status = Some(status.as_u16());
    Err(e)
}

struct Cached {
    token: SecretString,
    refresh_at: SystemTime,
}

/// Access tokens by service account, shared by every attempt of the process.
#[derive(Default)]
pub struct TokenCache {
    // Held across a fetch so that a burst of requests makes one exchange, not one each.
    tokens: Mutex<HashMap<String, Cached>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCache")
    }
}

impl TokenCache {
    /// The bearer token for `key`: the cached one while it is fresh, else a new one obtained with
    /// `fetch` (which sends the token request and returns the status and body).
    pub async fn token<F, Fut>(
        &self,
        key: &SecretString,
        fetch: F,
    ) -> Result<SecretString, UpstreamError>
    where
        F: FnOnce(http::Request<Full<Bytes>>) -> Fut,
        Fut: std::future::Future<Output = Result<(http::StatusCode, Bytes), UpstreamError>>,
    {
        let Some(sa) = ServiceAccount::parse(key.expose_secret()) else {
            return Ok(key.clone());
        };
        let id = format!(
            "{}/{}",
            sa.client_email,
            sa.private_key_id.as_deref().unwrap_or("")
        );
        let mut tokens = self.tokens.lock().await;
        let now = SystemTime::now();
        if let Some(c) = tokens.get(&id)
            && c.refresh_at > now
        {
            return Ok(c.token.clone());
        }
        let (status, body) = fetch(sa.token_request(now)?).await?;
        let answer = parse_token_answer(status, &body)?;
        let life = Duration::from_secs(answer.expires_in);
        let token = SecretString::from(answer.access_token);
        tokens.insert(
            id,
            Cached {
                token: token.clone(),
                refresh_at: now + life.saturating_sub(REFRESH_MARGIN),
            },
        );
        Ok(token)
    }
}

/// AWS credentials from the environment, else from the shared credentials file.
pub fn aws_credentials(profile: Option<&str>) -> Result<Credentials, UpstreamError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    if let (Some(id), Some(secret)) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
        return Ok(Credentials::new(
            id,
            secret,
            env("AWS_SESSION_TOKEN"),
            None,
            "environment",
        ));
    }
    let profile = profile
        .map(str::to_string)
        .or_else(|| env("AWS_PROFILE"))
        .unwrap_or_else(|| "default".into());
    let path = env("AWS_SHARED_CREDENTIALS_FILE")
        .or_else(|| env("HOME").map(|h| format!("{h}/.aws/credentials")));
    let Some(path) = path else {
        return Err(auth_error(
            "no AWS credentials: the environment has none and there is no home directory",
        ));
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        auth_error(format!(
            "no AWS credentials in the environment, and the shared credentials file cannot be read ({})",
            e.kind()
        ))
    })?;
    profile_credentials(&text, &profile)
        .ok_or_else(|| auth_error(format!("profile `{profile}` of the shared credentials file has no aws_access_key_id and aws_secret_access_key")))
}

/// The credentials of `profile` in the text of a shared credentials file (INI: `[name]`
/// sections of `key = value` lines, `#` and `;` comments).
pub fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let mut values: HashMap<String, String> = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            in_profile = name == profile || name.strip_prefix("profile ") == Some(profile);
            continue;
        }
        if in_profile && let Some((k, v)) = line.split_once('=') {
            values.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let id = values.remove("aws_access_key_id")?;
    let secret = values.remove("aws_secret_access_key")?;
    Some(Credentials::new(
        id,
        secret,
        values.remove("aws_session_token"),
        None,
        "profile",
    ))
}

/// Signs `req` (whose body is `body`) with SigV4 for `service` in `region` at `time`, adding
/// `x-amz-date`, `x-amz-security-token` when there is a session token, `x-amz-content-sha256`
/// when `sign_body`, and `authorization`.
pub fn sign_v4(
    req: &mut http::Request<Full<Bytes>>,
    body: &[u8],
    credentials: &Credentials,
    region: &str,
    service: &str,
    time: SystemTime,
    sign_body: bool,
) -> Result<(), UpstreamError> {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
    };
    let identity = credentials.clone().into();
    let mut settings = SigningSettings::default();
    if sign_body {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(settings)
        .build()
        .map_err(|e| auth_error(format!("cannot sign the request: {e}")))?
        .into();
    let uri = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str(), v)));
    let signable = SignableRequest::new(
        req.method().as_str(),
        &uri,
        headers,
        SignableBody::Bytes(body),
    )
    .map_err(|e| auth_error(format!("cannot sign the request: {e}")))?;
    let (instructions, _) = sign(signable, &params)
        .map_err(|e| auth_error(format!("cannot sign the request: {e}")))?
        .into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        // 2015-08-30T12:36:00Z, the time of AWS's published SigV4 test suite.
        assert_eq!(s, "20150830T123600Z");
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn vector_credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_string),
            None,
            "test",
        )
    }

    fn authorization(req: &http::Request<Full<Bytes>>) -> &str {
        req.headers()["authorization"].to_str().unwrap()
    }

    // AWS's SigV4 test suite: `post-vanilla`.
    #[test]
    fn sigv4_matches_the_published_post_vanilla_vector() {
        let mut req = http::Request::post("https://example.amazonaws.com/")
            .header("host", "example.amazonaws.com")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let creds = vector_credentials(None);
        sign_v4(
            &mut req,
            b"",
            &creds,
            "us-east-1",
            "service",
            at("20150830T123600Z"),
            false,
        )
        .unwrap();
        assert_eq!(
            authorization(&req),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"
        );
        assert_eq!(req.headers()["x-amz-date"], "20150830T123600Z");
    }

    // `post-x-www-form-urlencoded`: a signed body hash, as our Bedrock requests carry.
    #[test]
    fn sigv4_matches_the_published_signed_body_vector() {
        let body = b"Param1=value1";
        let mut req = http::Request::post("https://example.amazonaws.com/")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("host", "example.amazonaws.com")
            .header("content-length", "13")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
        let creds = vector_credentials(None);
        sign_v4(
            &mut req,
            body,
            &creds,
            "us-east-1",
            "service",
            at("20150830T123600Z"),
            true,
        )
        .unwrap();
        assert_eq!(
            authorization(&req),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-length;content-type;host;x-amz-content-sha256;x-amz-date, Signature=d3875051da38690788ef43de4db0d8f280229d82040bfac253562e56c3f20e0b"
        );
        assert_eq!(
            req.headers()["x-amz-content-sha256"],
            "9095672bbd1f56dfc5b65f3e153adc8731a4a654192329106275f4c7b24d0b6e"
        );
    }

    // `get-vanilla-with-session-token`.
    #[test]
    fn sigv4_matches_the_published_session_token_vector() {
        let mut req = http::Request::get("https://example.amazonaws.com/")
            .header("host", "example.amazonaws.com")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let creds = vector_credentials(Some(
            "6e86291e8372ff2a2260956d9b8aae1d763fbf315fa00fa31553b73ebf194267",
        ));
        sign_v4(
            &mut req,
            b"",
            &creds,
            "us-east-1",
            "service",
            at("20150830T123600Z"),
            false,
        )
        .unwrap();
        assert!(
            authorization(&req).ends_with(
                "Signature=07ec1639c89043aa0e3e2de82b96708f198cceab042d4a97044c66dd9f74e7f8"
            ),
            "{}",
            authorization(&req)
        );
        assert!(req.headers().contains_key("x-amz-security-token"));
    }

    #[test]
    fn profiles_are_read_from_the_shared_credentials_file() {
        let text = "# comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[profile work]\naws_access_key_id=AKIDWORK\naws_secret_access_key=s2\naws_session_token = tok\n";
        let d = profile_credentials(text, "default").unwrap();
        assert_eq!(d.access_key_id(), "AKIDDEFAULT");
        assert!(d.session_token().is_none());
        let w = profile_credentials(text, "work").unwrap();
        assert_eq!(w.access_key_id(), "AKIDWORK");
        assert_eq!(w.session_token(), Some("tok"));
        assert!(profile_credentials(text, "other").is_none());
    }

    #[test]
    fn a_key_that_is_not_a_service_account_is_a_token() {
        assert!(ServiceAccount::parse("ya29.token").is_none());
        assert!(ServiceAccount::parse(r#"{"type":"authorized_user"}"#).is_none());
    }

    #[test]
    fn token_endpoint_errors_name_the_reason_not_the_secret() {
        let e = parse_token_answer(
            http::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"Invalid JWT Signature."}"#,
        )
        .err()
        .unwrap();
        assert_eq!(e.class, ErrorClass::UpstreamAuth);
        assert!(e.message.contains("Invalid JWT Signature"), "{}", e.message);
        let e = parse_token_answer(http::StatusCode::SERVICE_UNAVAILABLE, b"")
            .err()
            .unwrap();
        assert_eq!(e.class, ErrorClass::Unavailable);
    }
}

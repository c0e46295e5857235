//! The cloud providers' authentication as the simulator checks it:
//!
//! - **Vertex AI**: `POST /token` takes the JWT-bearer grant a service account makes
//!   (`grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`, an RS256 JWT whose claims name
//!   the account, the cloud-platform scope and this endpoint as audience), answers
//!   `{access_token, expires_in, token_type}`, and chat requests must then carry one of the
//!   tokens it issued as `Authorization: Bearer`. With `api_key` set, the JWT's `iss` must be it
//!   (the service account's email). The signature is not verified: the simulator has no key.
//! - **Bedrock**: a request signed with SigV4 carries `x-amz-date` and an `Authorization` of the
//!   shape `AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/REGION/bedrock/aws4_request,
//!   SignedHeaders=…host…x-amz-date…, Signature=<64 hex>` whose date is the `x-amz-date`'s day
//!   and whose region is the simulator's `aws_region` (when set); with `api_key` set the access
//!   key id must be it. A Bedrock API key (`Authorization: Bearer`) is compared with `api_key`.

use std::collections::HashSet;
use std::sync::Mutex;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Response, StatusCode, header};
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::server::App;
use crate::wire::json_response;

/// How long issued tokens are said to last.
pub const TOKEN_LIFETIME_S: u64 = 3600;

/// Tokens issued by the simulated token endpoints. Like Google's, a token issued at one
/// endpoint is good at every Vertex provider: a service account's token is not per model.
#[derive(Debug, Default)]
pub struct IssuedTokens;

fn issued() -> &'static Mutex<HashSet<String>> {
    static ISSUED: std::sync::OnceLock<Mutex<HashSet<String>>> = std::sync::OnceLock::new();
    ISSUED.get_or_init(Default::default)
}

impl IssuedTokens {
    /// Whether `token` was issued by a simulated token endpoint.
    pub fn valid(&self, token: &str) -> bool {
        issued()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(token)
    }

    fn issue(&self, n: u64) -> String {
        let token = format!("ya29.sim-{n}-{:016x}", rand::random::<u64>());
        issued()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone());
        token
    }
}

fn oauth_error(error: &str, description: &str) -> Response<Body> {
    json_response(
        StatusCode::BAD_REQUEST,
        &json!({"error": error, "error_description": description}),
    )
}

/// Checks a JWT-bearer assertion's shape and claims; the `iss` on success.
pub fn check_assertion(assertion: &str, audience_suffix: &str) -> Result<String, String> {
    let parts: Vec<&str> = assertion.split('.').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.is_empty()) {
        return Err("Invalid JWT: expected three segments".into());
    }
    let decode = |s: &str| -> Result<Value, String> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| "Invalid JWT: a segment is not base64url".to_string())?;
        serde_json::from_slice(&bytes).map_err(|_| "Invalid JWT: a segment is not JSON".into())
    };
    let head = decode(parts[0])?;
    let claims = decode(parts[1])?;
    if head["alg"] != "RS256" {
        return Err("Invalid JWT: alg must be RS256".into());
    }
    if claims["scope"]
        .as_str()
        .is_none_or(|s| !s.contains("https://www.googleapis.com/auth/cloud-platform"))
    {
        return Err("Invalid JWT: scope must include cloud-platform".into());
    }
    if claims["aud"]
        .as_str()
        .is_none_or(|a| !a.ends_with(audience_suffix))
    {
        return Err("Invalid JWT: aud must be the token endpoint".into());
    }
    let (Some(iat), Some(exp)) = (claims["iat"].as_u64(), claims["exp"].as_u64()) else {
        return Err("Invalid JWT: iat and exp are required".into());
    };
    if exp <= iat || exp - iat > 3600 {
        return Err("Invalid JWT: exp must be within an hour of iat".into());
    }
    claims["iss"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "Invalid JWT: iss is required".into())
}

/// `POST /token`: the OAuth2 JWT-bearer grant.
pub async fn token(State(app): State<App>, body: Bytes) -> Response<Body> {
    let state = &app.state;
    state.count_token_exchange();
    let form: Vec<(String, String)> = url_pairs(&body);
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    if get("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return oauth_error("unsupported_grant_type", "Invalid grant_type.");
    }
    let Some(assertion) = get("assertion") else {
        return oauth_error("invalid_request", "Missing required parameter: assertion");
    };
    match check_assertion(assertion, "/token") {
        Err(why) => oauth_error("invalid_grant", &why),
        Ok(iss) if state.config.api_key.as_deref().is_some_and(|k| k != iss) => {
            oauth_error("invalid_grant", "Invalid JWT Signature.")
        }
        Ok(_) => {
            let token = state.tokens.issue(state.next_id());
            json_response(
                StatusCode::OK,
                &json!({"access_token": token, "expires_in": TOKEN_LIFETIME_S, "token_type": "Bearer"}),
            )
        }
    }
}

fn url_pairs(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            let dec = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            };
            Some((dec(k), dec(v)))
        })
        .collect()
}

/// The bearer token presented, if any.
pub fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_string())
}

/// A SigV4 `Authorization` header, taken apart.
#[derive(Debug, PartialEq, Eq)]
pub struct SigV4 {
    /// Access key id.
    pub access_key: String,
    /// `YYYYMMDD`.
    pub date: String,
    /// Region.
    pub region: String,
    /// Service.
    pub service: String,
    /// Signed header names.
    pub signed_headers: Vec<String>,
}

/// Parses and checks a SigV4 signature's shape against `x-amz-date`.
pub fn check_sigv4(headers: &HeaderMap) -> Result<SigV4, String> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or("Missing Authentication Token")?;
    let rest = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .ok_or("Authorization header requires the AWS4-HMAC-SHA256 algorithm")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let part = part.trim();
        if let Some(v) = part.strip_prefix("Credential=") {
            credential = Some(v);
        } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
            signed = Some(v);
        } else if let Some(v) = part.strip_prefix("Signature=") {
            signature = Some(v);
        }
    }
    let (Some(credential), Some(signed), Some(signature)) = (credential, signed, signature) else {
        return Err("Authorization header requires Credential, SignedHeaders and Signature".into());
    };
    let scope: Vec<&str> = credential.split('/').collect();
    if scope.len() != 5 || scope[4] != "aws4_request" {
        return Err("Credential should be scoped to a valid region and service".into());
    }
    if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("Signature must be 64 hex digits".into());
    }
    let date = headers
        .get("x-amz-date")
        .and_then(|v| v.to_str().ok())
        .ok_or("x-amz-date is required")?;
    if date.len() != 16 || !date.starts_with(scope[1]) {
        return Err("Date in Credential scope does not match x-amz-date".into());
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
    for needed in ["host", "x-amz-date"] {
        if !signed_headers.iter().any(|h| h == needed) {
            return Err(format!("SignedHeaders must include {needed}"));
        }
    }
    Ok(SigV4 {
        access_key: scope[0].to_string(),
        date: scope[1].to_string(),
        region: scope[2].to_string(),
        service: scope[3].to_string(),
        signed_headers,
    })
}

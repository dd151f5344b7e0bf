//! Team tokens: short-lived bearer tokens that a product backend mints with the operator
//! token, for one team (optionally one of its destinations), read-only or read-write, so
//! the team's own users can reach their webhooks without the operator token.
//!
//! A token is a JWT (HS256) signed with the key `current_key` of `[admin.team_tokens]`,
//! whose id is in the token's `kid`. Any key of the ring verifies, so a rotation adds the
//! new key, makes it current, and removes the old one once the longest-lived token signed
//! with it (`max_ttl_seconds`) has expired: no live token is invalidated early.
//!
//! What a token may reach follows from the [`Reach`] each resource declares for its
//! routes, decided by [`Caller::admits`] before any handler runs (a route no resource
//! declares is the operator's alone): another team's path is answered 404 (ids of other teams never leak), a read-only
//! token may only read, and a token of one destination reaches that destination only, and
//! only while it is the destination the token was minted for (its uid: a deleted and
//! recreated destination of the same id is another one). `Caller::admits` is pure; the
//! uid is checked against the catalog by the admin API's authorisation, on every request
//! of a token of one destination; the team's list and its replay jobs are filtered by
//! their handlers ([`Caller::sees`]).

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Json, Router,
    extract::{State, rejection::JsonRejection},
    http::{Method, StatusCode},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use hookflow_core::Secret;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{AdminState, ApiError, ApiPath};
use crate::destinations::postgres::writes::StoreError;

/// Minting a token of a team.
const TOKENS: &str = "/v1/teams/{team}/tokens";

/// The paths of this resource, and what a team token reaches on each.
pub(super) const ROUTES: &[(&str, Reach)] = &[(TOKENS, Reach::Operator)];

/// What a team token may reach on a route of its own team.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// The team's destinations as a whole: a token of one destination lists only it (the
    /// handler filters) and creates none.
    TeamCollection,
    /// One destination, named by the route's `{id}`.
    Destination,
    /// The team's replay jobs: a token of one destination reaches only its own jobs (the
    /// handlers check, from the job or the body).
    ReplayJobs,
    /// Nothing: the operator's route alone.
    Operator,
}

/// Adds this resource's routes.
pub(super) fn routes(router: Router<AdminState>) -> Router<AdminState> {
    router.route(TOKENS, post(mint))
}

/// The audience of every team token: a token of another system signed with the same
/// key is still refused.
const AUDIENCE: &str = "hookflow-admin";
/// The shortest key of the ring, in bytes (HS256's own hash size).
const MIN_KEY_BYTES: usize = 32;

/// `[admin.team_tokens]`: the keys team tokens are signed with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamTokenSettings {
    /// The id of the key new tokens are signed with (lowercase, as key ids set through the
    /// environment are); empty, with no keys, for no team tokens.
    #[serde(default)]
    pub current_key: String,
    /// Every key that verifies tokens: id → at least 32 bytes, base64. Set them in the
    /// environment (`HOOKFLOW_ADMIN__TEAM_TOKENS__KEYS__<ID>`).
    #[serde(default)]
    pub keys: BTreeMap<String, Secret>,
    /// The longest a token may live, in seconds.
    #[serde(default = "default_max_ttl_seconds")]
    pub max_ttl_seconds: u64,
}

impl Default for TeamTokenSettings {
    fn default() -> Self {
        TeamTokenSettings {
            current_key: String::new(),
            keys: BTreeMap::new(),
            max_ttl_seconds: default_max_ttl_seconds(),
        }
    }
}

fn default_max_ttl_seconds() -> u64 {
    86_400
}

/// What a token grants within its team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenAccess {
    /// `GET` (and `HEAD`) only.
    #[default]
    Read,
    /// Everything a team's route offers (never minting tokens).
    ReadWrite,
}

/// The destination a token is limited to: its id, and its uid when minted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenDestination {
    /// The destination's id.
    pub id: String,
    /// Its uid when the token was minted.
    pub uid: String,
}

/// What a team token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeamClaims {
    /// Always [`AUDIENCE`].
    aud: String,
    /// The team.
    pub team: i64,
    /// The one destination it reaches, if it is limited to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<TokenDestination>,
    /// What it may do.
    pub access: TokenAccess,
    /// Issued at, seconds since the epoch.
    iat: i64,
    /// Expires at, seconds since the epoch.
    exp: i64,
}

/// The ring of team-token keys.
pub struct TokenKeys {
    current: String,
    encoding: EncodingKey,
    decoding: BTreeMap<String, DecodingKey>,
    max_ttl: Duration,
}

impl TokenKeys {
    /// The ring of `settings`; `None` when no key is set (team tokens are off). The error
    /// names the setting at fault.
    pub fn from_settings(settings: &TeamTokenSettings) -> Result<Option<TokenKeys>, String> {
        if settings.keys.is_empty() && settings.current_key.is_empty() {
            return Ok(None);
        }
        let mut decoding = BTreeMap::new();
        let mut encoding = None;
        for (id, key) in &settings.keys {
            let bytes = STANDARD
                .decode(key.expose().trim())
                .map_err(|_| format!("keys.{id}: not base64"))?;
            if bytes.len() < MIN_KEY_BYTES {
                return Err(format!("keys.{id}: must be at least {MIN_KEY_BYTES} bytes"));
            }
            let unusable = |e: jsonwebtoken::errors::Error| format!("keys.{id}: {e}");
            if *id == settings.current_key {
                encoding = Some(EncodingKey::from_secret(&bytes).map_err(unusable)?);
            }
            decoding.insert(
                id.clone(),
                DecodingKey::from_secret(&bytes).map_err(unusable)?,
            );
        }
        let encoding = encoding.ok_or_else(|| {
            format!(
                "current_key: {:?} is not among the keys",
                settings.current_key
            )
        })?;
        if !(60..=7 * 86_400).contains(&settings.max_ttl_seconds) {
            return Err("max_ttl_seconds: must be 60 s to 7 days".into());
        }
        Ok(Some(TokenKeys {
            current: settings.current_key.clone(),
            encoding,
            decoding,
            max_ttl: Duration::from_secs(settings.max_ttl_seconds),
        }))
    }

    /// A token for `team`, limited to `destination` if given, living `ttl`.
    fn mint(
        &self,
        team: i64,
        destination: Option<TokenDestination>,
        access: TokenAccess,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        let expires = now + ttl;
        let claims = TeamClaims {
            aud: AUDIENCE.into(),
            team,
            destination,
            access,
            iat: now.timestamp(),
            exp: expires.timestamp(),
        };
        let header = Header {
            kid: Some(self.current.clone()),
            ..Header::new(Algorithm::HS256)
        };
        let token = jsonwebtoken::encode(&header, &claims, &self.encoding)?;
        Ok((token, expires))
    }

    /// The claims of `token` if a key of the ring signed it and it has not expired.
    pub fn verify(&self, token: &str) -> Option<TeamClaims> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        let key = self.decoding.get(header.kid.as_deref()?)?;
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        // An expired token is refused from its expiry on, not a minute later.
        validation.leeway = 0;
        jsonwebtoken::decode::<TeamClaims>(token, key, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

/// Who sent a request: the operator, or a team's token.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The operator token: every route of every team.
    Operator,
    /// A team token.
    Team(TeamClaims),
}

/// Why a team token does not reach a route.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Not its team, or not its destination: answered as if nothing were there.
    NotFound,
    /// Its own team's route, which it may not use (the reason is said).
    Forbidden(&'static str),
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        match refusal {
            Refusal::NotFound => ApiError::not_found("not found".into()),
            Refusal::Forbidden(reason) => ApiError::new(StatusCode::FORBIDDEN, reason, None),
        }
    }
}

impl Caller {
    /// Whether this caller may call a route of team `team` that reaches `reach`, with
    /// `method`, on destination `id` (when the route names one). A token's destination uid
    /// is checked apart, against the catalog.
    pub(super) fn admits(
        &self,
        reach: Reach,
        method: &Method,
        team: i64,
        id: Option<&str>,
    ) -> Result<(), Refusal> {
        let Caller::Team(claims) = self else {
            return Ok(());
        };
        // Another team's route is not there for this token, whatever it is.
        if claims.team != team {
            return Err(Refusal::NotFound);
        }
        let reads = matches!(*method, Method::GET | Method::HEAD);
        match (reach, &claims.destination) {
            (Reach::Operator, _) => {
                return Err(Refusal::Forbidden("only the operator token may do this"));
            }
            (Reach::Destination, Some(limit)) if id != Some(limit.id.as_str()) => {
                return Err(Refusal::NotFound);
            }
            (Reach::TeamCollection, Some(_)) if !reads => {
                return Err(Refusal::Forbidden(
                    "this token is for one destination: it creates none",
                ));
            }
            _ => {}
        }
        if claims.access == TokenAccess::Read && !reads {
            return Err(Refusal::Forbidden("this token is read-only"));
        }
        Ok(())
    }

    /// Whether this caller sees destination `id` in a team's list or in a replay job
    /// (`None`: every destination of the team, which a token of one does not see).
    pub(super) fn sees(&self, id: Option<&str>) -> bool {
        match self {
            Caller::Team(TeamClaims {
                destination: Some(limit),
                ..
            }) => id == Some(limit.id.as_str()),
            _ => true,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    destination_id: Option<String>,
    #[serde(default)]
    access: TokenAccess,
    ttl_seconds: Option<u64>,
}

/// The default life of a token, when the request names none (within the maximum).
const DEFAULT_TTL: Duration = Duration::from_secs(3_600);

/// Mints a team token (operator only: [`Caller::admits`] refuses team tokens).
async fn mint(
    State(state): State<AdminState>,
    ApiPath(team): ApiPath<i64>,
    body: Result<Json<MintBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(body) = body.map_err(|e| ApiError::bad_request(e.body_text(), None))?;
    let keys = state.team_tokens.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "team tokens are off: set admin.team_tokens.current_key and its key",
            None,
        )
    })?;
    let ttl = match body.ttl_seconds {
        None => DEFAULT_TTL.min(keys.max_ttl),
        Some(seconds) if (1..=keys.max_ttl.as_secs()).contains(&seconds) => {
            Duration::from_secs(seconds)
        }
        Some(_) => {
            return Err(ApiError::bad_request(
                format!("must be 1 to {} seconds", keys.max_ttl.as_secs()),
                Some("ttl_seconds"),
            ));
        }
    };
    let destination = match &body.destination_id {
        None => None,
        Some(id) => {
            // Its uid only: minting opens no secret.
            let uid = state
                .store
                .uid_of(team, id)
                .await?
                .ok_or_else(|| StoreError::NotFound(id.clone()))?;
            Some(TokenDestination {
                id: id.clone(),
                uid: uid.to_string(),
            })
        }
    };
    let (token, expires) = keys
        .mint(team, destination, body.access, ttl, Utc::now())
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot sign: {e}"),
                None,
            )
        })?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token,
            "team_id": team,
            "destination_id": body.destination_id,
            "access": body.access,
            "expires_at": expires.to_rfc3339(),
        })),
    ))
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn keys(current: &str, ids: &[&str]) -> TokenKeys {
        let settings = TeamTokenSettings {
            current_key: current.into(),
            keys: ids
                .iter()
                .map(|id| {
                    (
                        id.to_string(),
                        Secret::from(STANDARD.encode([id.as_bytes()[0]; 32]).as_str()),
                    )
                })
                .collect(),
            max_ttl_seconds: 3_600,
        };
        TokenKeys::from_settings(&settings)
            .expect("valid")
            .expect("on")
    }

    fn team_token(
        keys: &TokenKeys,
        destination: Option<(&str, &str)>,
        access: TokenAccess,
    ) -> String {
        let destination = destination.map(|(id, uid)| TokenDestination {
            id: id.into(),
            uid: uid.into(),
        });
        keys.mint(7, destination, access, Duration::from_secs(60), Utc::now())
            .expect("minted")
            .0
    }

    #[test]
    fn a_token_verifies_under_any_key_of_the_ring_and_no_other() {
        let old = keys("a", &["a"]);
        let token = team_token(&old, None, TokenAccess::Read);
        let rotated = keys("b", &["a", "b"]);
        assert_eq!(
            rotated.verify(&token).map(|c| c.team),
            Some(7),
            "the old key still verifies"
        );
        assert!(
            keys("b", &["b"]).verify(&token).is_none(),
            "its key removed"
        );
        let mut tampered = token.clone();
        tampered.insert(tampered.len() - 2, 'x');
        assert!(rotated.verify(&tampered).is_none());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = keys("a", &["a"]);
        let minted_long_ago = Utc::now() - chrono::Duration::seconds(120);
        let (token, _) = keys
            .mint(
                7,
                None,
                TokenAccess::Read,
                Duration::from_secs(60),
                minted_long_ago,
            )
            .expect("minted");
        assert!(keys.verify(&token).is_none());
    }

    #[test]
    fn settings_name_what_is_wrong() {
        let short = TeamTokenSettings {
            current_key: "a".into(),
            keys: [(
                "a".to_string(),
                Secret::from(STANDARD.encode([1u8; 16]).as_str()),
            )]
            .into(),
            max_ttl_seconds: 3_600,
        };
        let error = TokenKeys::from_settings(&short).err().expect("refused");
        assert!(error.contains("keys.a"), "{error}");
        let missing = TeamTokenSettings {
            current_key: "b".into(),
            ..short.clone()
        };
        assert!(TokenKeys::from_settings(&missing).is_err());
        assert!(
            TokenKeys::from_settings(&TeamTokenSettings::default())
                .expect("valid")
                .is_none()
        );
    }

    fn claims(destination: Option<&str>, access: TokenAccess) -> Caller {
        Caller::Team(TeamClaims {
            aud: AUDIENCE.into(),
            team: 7,
            destination: destination.map(|id| TokenDestination {
                id: id.into(),
                uid: "u".into(),
            }),
            access,
            iat: 0,
            exp: 0,
        })
    }

    #[test]
    fn a_team_token_reaches_its_own_team_and_destination_only() {
        use Reach::*;
        let (get, post, head) = (Method::GET, Method::POST, Method::HEAD);
        let forbidden = |r: Result<(), Refusal>| matches!(r, Err(Refusal::Forbidden(_)));
        let team = claims(None, TokenAccess::ReadWrite);
        assert_eq!(team.admits(Destination, &get, 7, Some("d")), Ok(()));
        assert_eq!(
            team.admits(Destination, &get, 8, Some("d")),
            Err(Refusal::NotFound),
            "another team's route: not there, not forbidden"
        );
        assert_eq!(
            team.admits(Operator, &post, 8, None),
            Err(Refusal::NotFound)
        );
        assert_eq!(team.admits(TeamCollection, &post, 7, None), Ok(()));
        assert_eq!(team.admits(ReplayJobs, &post, 7, None), Ok(()));
        assert!(forbidden(team.admits(Operator, &post, 7, None)));
        assert!(forbidden(team.admits(Operator, &get, 7, None)));

        let one = claims(Some("d"), TokenAccess::ReadWrite);
        assert_eq!(one.admits(Destination, &post, 7, Some("d")), Ok(()));
        assert_eq!(
            one.admits(Destination, &get, 7, Some("e")),
            Err(Refusal::NotFound)
        );
        assert_eq!(
            one.admits(Destination, &get, 7, None),
            Err(Refusal::NotFound)
        );
        assert_eq!(one.admits(TeamCollection, &get, 7, None), Ok(()));
        assert!(forbidden(one.admits(TeamCollection, &post, 7, None)));
        assert!(one.sees(Some("d")) && !one.sees(Some("e")) && !one.sees(None));

        let read = claims(None, TokenAccess::Read);
        assert_eq!(read.admits(Destination, &get, 7, Some("d")), Ok(()));
        assert_eq!(read.admits(Destination, &head, 7, Some("d")), Ok(()));
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(forbidden(read.admits(Destination, &method, 7, Some("d"))));
        }
        assert_eq!(
            Caller::Operator.admits(Operator, &post, 8, None),
            Ok(()),
            "the operator reaches everything"
        );
    }

    /// A token signed with `key` (the ring's `a` key is `[b'a'; 32]`) and these parts.
    fn forged(header: &Header, claims: &Value, key: &[u8]) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(key).expect("key"))
            .expect("encoded")
    }

    #[test]
    fn forged_tokens_are_refused() {
        let ring = keys("a", &["a"]);
        let key = [b'a'; 32];
        let in_an_hour = Utc::now().timestamp() + 3_600;
        let good = json!({"aud": AUDIENCE, "team": 7, "access": "read_write",
                          "iat": 0, "exp": in_an_hour});
        let with_kid = |alg, kid: Option<&str>| Header {
            kid: kid.map(str::to_owned),
            ..Header::new(alg)
        };
        assert!(
            ring.verify(&forged(&with_kid(Algorithm::HS256, Some("a")), &good, &key))
                .is_some(),
            "the control: this one is genuine"
        );
        for (what, token) in [
            (
                "no kid",
                forged(&with_kid(Algorithm::HS256, None), &good, &key),
            ),
            (
                "an unknown kid",
                forged(&with_kid(Algorithm::HS256, Some("z")), &good, &key),
            ),
            (
                "another algorithm",
                forged(&with_kid(Algorithm::HS512, Some("a")), &good, &key),
            ),
            (
                "another key",
                forged(&with_kid(Algorithm::HS256, Some("a")), &good, &[b'b'; 32]),
            ),
            (
                "another audience",
                forged(
                    &with_kid(Algorithm::HS256, Some("a")),
                    &json!({"aud": "other", "team": 7, "access": "read", "iat": 0,
                            "exp": in_an_hour}),
                    &key,
                ),
            ),
            (
                "no expiry",
                forged(
                    &with_kid(Algorithm::HS256, Some("a")),
                    &json!({"aud": AUDIENCE, "team": 7, "access": "read", "iat": 0}),
                    &key,
                ),
            ),
        ] {
            assert!(ring.verify(&token).is_none(), "{what}");
        }
        // `alg: none`, unsigned.
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"a","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(good.to_string());
        assert!(
            ring.verify(&format!("{header}.{body}.")).is_none(),
            "alg none"
        );
    }
}

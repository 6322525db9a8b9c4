//! Authentication: HTTP Basic `api_key:secret` against argon2id hashes, and the admin bearer
//! token.
//!
//! Argon2 is slow on purpose, so hashing and verifying run on tokio's blocking pool — never on
//! the writer thread, never on the async workers. A verified credential is remembered as a
//! keyed BLAKE3 digest of the secret (the key is random per process; the plaintext is never
//! kept) together with the id of the secret it matched; every later request checks that this
//! secret id is still active in the read views, so a revoked secret stops working at once.
//! Failed attempts are counted per api key and refused for a while past a limit.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use rustc_hash::FxHashMap;
use subledger_core::{ApiKey, SecretHash, SecretId};
use subledger_engine::{EngineError, Ledger};

use crate::problem::Problem;

/// Most remembered verified credentials; the cache is cleared when it fills.
pub const CREDENTIAL_CACHE_ENTRIES_MAX: usize = 100_000;
/// Failed attempts per api key allowed within [`AUTH_FAILURE_WINDOW_SECONDS`].
pub const AUTH_FAILURES_MAX: u32 = 10;
pub const AUTH_FAILURE_WINDOW_SECONDS: u64 = 60;
/// Longest accepted `Authorization` header, in bytes.
pub const AUTHORIZATION_BYTES_MAX: usize = 512;

/// Most memory an imported secret hash may ask for at verification, in KiB (64 MiB).
pub const IMPORTED_HASH_MEMORY_KIB_MAX: u32 = 64 * 1024;
/// Most passes an imported secret hash may ask for.
pub const IMPORTED_HASH_PASSES_MAX: u32 = 8;
/// Most lanes an imported secret hash may ask for.
pub const IMPORTED_HASH_LANES_MAX: u32 = 4;
/// Most argon2 computations (hashing or verifying) at once; more wait their turn. With
/// [`IMPORTED_HASH_MEMORY_KIB_MAX`] this bounds argon2's memory at 256 MiB, however many
/// wrong secrets arrive at once.
pub const ARGON2_CONCURRENT_MAX: usize = 4;

/// Argon2id cost parameters (the defaults are OWASP's minimum: 19 MiB, 2 passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCost {
    pub memory_kib: u32,
    pub passes: u32,
}

impl Default for HashCost {
    fn default() -> HashCost {
        HashCost {
            memory_kib: 19 * 1024,
            passes: 2,
        }
    }
}

/// Failed attempts counted since an instant.
type FailureWindow = (u32, Instant);

/// Who made a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub key: ApiKey,
    /// The owner's key when the caller is a subaccount.
    pub primary: Option<ApiKey>,
    /// The secret the caller authenticated with (`None` for the operator's admin token).
    pub secret: Option<SecretId>,
}

#[derive(Debug)]
pub struct Authenticator {
    cost: HashCost,
    digest_key: [u8; 32],
    verified: Mutex<FxHashMap<(ApiKey, [u8; 32]), SecretId>>,
    /// Failed attempts per (api key, client address): a key's owner is not locked out by
    /// someone else failing from elsewhere.
    failures: Mutex<FxHashMap<(ApiKey, Option<IpAddr>), FailureWindow>>,
    admin_digest: blake3::Hash,
    /// Permits for argon2 work ([`ARGON2_CONCURRENT_MAX`]). Each is moved into the blocking
    /// task that uses it: a request that gives up (a timeout) must not free its turn while its
    /// hash still runs.
    argon2_permits: Arc<tokio::sync::Semaphore>,
    /// Argon2 hashes and verifications started (for `/metrics`: the server's costliest work).
    argon2_runs: std::sync::atomic::AtomicU64,
}

fn argon2(cost: HashCost) -> Result<Argon2<'static>, Problem> {
    let params = Params::new(cost.memory_kib, cost.passes, 1, None)
        .map_err(|error| Problem::internal(format!("argon2 parameters: {error}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

impl Authenticator {
    pub fn new(cost: HashCost, admin_token: &str) -> Authenticator {
        let mut digest_key = [0u8; 32];
        digest_key[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        digest_key[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Authenticator {
            cost,
            digest_key,
            verified: Mutex::new(FxHashMap::default()),
            failures: Mutex::new(FxHashMap::default()),
            admin_digest: blake3::hash(admin_token.as_bytes()),
            argon2_permits: Arc::new(tokio::sync::Semaphore::new(ARGON2_CONCURRENT_MAX)),
            argon2_runs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Waits for a turn at argon2.
    async fn argon2_turn(&self) -> Result<tokio::sync::OwnedSemaphorePermit, Problem> {
        let turn = Arc::clone(&self.argon2_permits)
            .acquire_owned()
            .await
            .map_err(|_| Problem::internal("argon2 permits are closed"))?;
        self.argon2_runs
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(turn)
    }

    /// Argon2 runs started since the server started: hashes of new secrets, and verifications
    /// of uncached credentials (each checks up to an account's two secrets).
    pub fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Hashes a new secret (argon2id, random salt) on the blocking pool.
    pub async fn hash_secret(&self, secret: String) -> Result<SecretHash, Problem> {
        let cost = self.cost;
        let turn = self.argon2_turn().await?;
        let phc = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let salt = SaltString::generate(&mut OsRng);
            argon2(cost)?
                .hash_password(secret.as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| Problem::internal(format!("hashing failed: {error}")))
        })
        .await
        .map_err(|_| Problem::internal("the hashing task failed"))??;
        SecretHash::new(phc).map_err(|error| Problem::internal(error.to_string()))
    }

    /// Checks a secret hash brought from elsewhere (`POST /admin/import`): an argon2id PHC
    /// string (version 19) at least as costly as the hashes this server makes — an import must
    /// not weaken the store — and at most [`IMPORTED_HASH_MEMORY_KIB_MAX`] and
    /// [`IMPORTED_HASH_PASSES_MAX`], so that verifying it cannot exhaust the server.
    pub fn imported_hash(&self, text: &str) -> Result<SecretHash, String> {
        let parsed = PasswordHash::new(text).map_err(|_| "must be an argon2id PHC string")?;
        if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.version != Some(0x13) {
            return Err("must be argon2id, version 19".into());
        }
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err("must carry a salt and a hash".into());
        }
        let params = Params::try_from(&parsed).map_err(|_| "has invalid argon2 parameters")?;
        let (memory, passes) = (params.m_cost(), params.t_cost());
        if memory < self.cost.memory_kib || passes < self.cost.passes {
            return Err(format!(
                "is weaker than this server's hashes (at least m={} and t={})",
                self.cost.memory_kib, self.cost.passes
            ));
        }
        if memory > IMPORTED_HASH_MEMORY_KIB_MAX
            || passes > IMPORTED_HASH_PASSES_MAX
            || params.p_cost() > IMPORTED_HASH_LANES_MAX
        {
            return Err(format!(
                "costs too much to verify (at most m={IMPORTED_HASH_MEMORY_KIB_MAX}, \
                 t={IMPORTED_HASH_PASSES_MAX}, p={IMPORTED_HASH_LANES_MAX})"
            ));
        }
        SecretHash::new(text.to_string()).map_err(|error| error.to_string())
    }

    /// The admin bearer token check (constant time: BLAKE3 digests compare in constant time).
    pub fn admin(&self, headers: &HeaderMap) -> Result<(), Problem> {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(Problem::unauthorized)?;
        if blake3::hash(given.trim().as_bytes()) == self.admin_digest {
            Ok(())
        } else {
            Err(Problem::unauthorized())
        }
    }

    /// Authenticates a read of `target`'s data: Basic credentials as [`Self::authenticate`], or
    /// the admin token, which reads as the owner of `target` — the operator's read-only view.
    /// Handlers that change anything call [`Self::authenticate`], which never accepts the token.
    pub async fn authenticate_read(
        &self,
        ledger: &Arc<Ledger>,
        headers: &HeaderMap,
        target: &str,
    ) -> Result<Principal, Problem> {
        let bearer = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .is_some_and(|value| value.starts_with("Bearer "));
        if !bearer {
            return self.authenticate(ledger, headers).await;
        }
        self.admin(headers)?;
        let key: ApiKey = target
            .parse()
            .map_err(|_| Problem::invalid_api_key(target))?;
        let owner = ledger
            .read(|views| views.account(&key).map(|account| account.primary))
            .ok_or_else(|| Problem::invalid_api_key(target))?;
        Ok(Principal {
            key: owner.unwrap_or(key),
            primary: None,
            secret: None,
        })
    }

    /// Whether what authenticated `principal` still holds: the account and its primary are
    /// active and the secret it used is not revoked. Long-lived requests (event streams) ask
    /// this as they go, so a revocation or suspension ends them too. The operator (no secret)
    /// always holds.
    pub fn still_valid(ledger: &Ledger, principal: &Principal) -> bool {
        let Some(secret) = principal.secret else {
            return true;
        };
        ledger.read(|views| {
            let Some(account) = views.account(&principal.key) else {
                return false;
            };
            let owner_active = account.primary.is_none_or(|primary| {
                views
                    .account(&primary)
                    .is_some_and(|owner| !owner.suspended)
            });
            let secret_active = views
                .secrets(&principal.key)
                .is_some_and(|secrets| secrets.iter().any(|active| active.id == secret));
            !account.suspended && !account.closed && owner_active && secret_active
        })
    }

    /// Checks Basic credentials against the account's active secrets.
    pub async fn authenticate(
        &self,
        ledger: &Arc<Ledger>,
        headers: &HeaderMap,
    ) -> Result<Principal, Problem> {
        let (key, secret) = basic(headers).ok_or_else(Problem::unauthorized)?;
        let peer = peer_address(headers);
        self.check_rate(key, peer)?;
        let found = ledger.read(|views| {
            let account = views.account(&key)?;
            if account.suspended || account.closed {
                return None;
            }
            // Suspending a primary locks its whole family out.
            if let Some(primary) = account.primary {
                if views.account(&primary).is_none_or(|owner| owner.suspended) {
                    return None;
                }
            }
            // Ids only: a remembered credential needs no hash (and no copy of one).
            let active: Vec<SecretId> = views
                .secrets(&key)?
                .iter()
                .map(|secret| secret.id)
                .collect();
            Some((account.primary, active))
        });
        let Some((primary, active)) = found else {
            self.failed(key, peer);
            return Err(Problem::unauthorized());
        };
        let digest = *blake3::keyed_hash(&self.digest_key, secret.as_bytes()).as_bytes();
        let remembered = self
            .verified
            .lock()
            .ok()
            .and_then(|cache| cache.get(&(key, digest)).copied());
        if let Some(id) = remembered.filter(|id| active.contains(id)) {
            return Ok(Principal {
                key,
                primary,
                secret: Some(id),
            });
        }
        let cost = self.cost;
        let turn = self.argon2_turn().await?;
        let ledger = Arc::clone(ledger);
        let matched = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            // The hashes come from the log (the views keep only where they are): blocking I/O,
            // one record per secret, next to argon2's ~20 ms.
            let secrets: Vec<(SecretId, SecretHash)> =
                ledger.secret_hashes(&key)?.unwrap_or_default();
            let Ok(verifier) = argon2(cost) else {
                return Ok(None);
            };
            Ok(secrets.into_iter().find_map(|(id, hash)| {
                let parsed = PasswordHash::new(hash.as_str()).ok()?;
                verifier
                    .verify_password(secret.as_bytes(), &parsed)
                    .ok()
                    .map(|()| id)
            }))
        })
        .await
        .map_err(|_| Problem::internal("the verification task failed"))?
        .map_err(|error: EngineError| Problem::from_engine(&error))?;
        match matched {
            Some(id) => {
                if let Ok(mut cache) = self.verified.lock() {
                    if cache.len() >= CREDENTIAL_CACHE_ENTRIES_MAX {
                        cache.clear();
                    }
                    cache.insert((key, digest), id);
                }
                Ok(Principal {
                    key,
                    primary,
                    secret: Some(id),
                })
            }
            None => {
                self.failed(key, peer);
                Err(Problem::unauthorized())
            }
        }
    }

    fn check_rate(&self, key: ApiKey, peer: Option<IpAddr>) -> Result<(), Problem> {
        let Ok(failures) = self.failures.lock() else {
            return Ok(());
        };
        match failures.get(&(key, peer)) {
            Some((count, since))
                if *count >= AUTH_FAILURES_MAX
                    && since.elapsed() < Duration::from_secs(AUTH_FAILURE_WINDOW_SECONDS) =>
            {
                Err(Problem::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too-many-attempts",
                    "Too Many Requests",
                    format!("too many failed attempts for this api key; retry in {AUTH_FAILURE_WINDOW_SECONDS} s"),
                ))
            }
            _ => Ok(()),
        }
    }

    fn failed(&self, key: ApiKey, peer: Option<IpAddr>) {
        if let Ok(mut failures) = self.failures.lock() {
            if failures.len() >= CREDENTIAL_CACHE_ENTRIES_MAX {
                failures.clear();
            }
            let entry = failures.entry((key, peer)).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= Duration::from_secs(AUTH_FAILURE_WINDOW_SECONDS) {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }
}

/// The header through which the server passes the client's address to authentication. Any
/// such header a client sends is removed before the server sets it (see `lib.rs`).
pub(crate) const PEER_HEADER: &str = "x-subledger-peer";

fn peer_address(headers: &HeaderMap) -> Option<IpAddr> {
    headers.get(PEER_HEADER)?.to_str().ok()?.parse().ok()
}

/// `Authorization: Basic base64(api_key:secret)`.
fn basic(headers: &HeaderMap) -> Option<(ApiKey, String)> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?;
    if value.len() > AUTHORIZATION_BYTES_MAX {
        return None;
    }
    // The scheme name is case-insensitive (RFC 9110 §11.1).
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (key, secret) = text.split_once(':')?;
    Some((key.parse().ok()?, secret.to_string()))
}

/// A new random secret that meets the rules: 16 characters with lower, upper and digits.
pub fn generate_secret() -> String {
    const LOWER: &[u8] = b"abcdefghijkmnopqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGITS: &[u8] = b"23456789";
    let random = [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ]
    .concat();
    (0..16)
        .map(|index| {
            let byte = random.get(index).copied().unwrap_or(0);
            let set = match index % 3 {
                0 => LOWER,
                1 => UPPER,
                _ => DIGITS,
            };
            char::from(set[usize::from(byte) % set.len()])
        })
        .collect()
}

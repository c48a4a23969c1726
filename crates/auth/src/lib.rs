//! Who may watch and who may administer a hub.
//!
//! One policy for every protocol: a request is an [`Action`] (on a stream, for `read`), from a
//! client address, with the [`Credentials`] its protocol carried. [`Authenticator::check`]
//! decides, in this order:
//!
//! 1. an address with too many recent failures is refused without a look at its credentials
//!    ([`limiter`]);
//! 2. no credentials: the `anonymous` permissions apply;
//! 3. a user and password: an internal user's argon2id hash ([`password`]); a password that is
//!    a JWT (RTSP clients cannot send bearer tokens) goes to the JWT check;
//! 4. an RTSP Digest response: an internal user's `digest` ([`digest`]);
//! 5. a bearer token: a sign-in session's ([`session`], issued by [`Authenticator::sign_in`] for
//!    an internal user), or the JWT check ([`jwt`]), with keys from a file or a JWKS URL ([`jwks`]);
//! 6. what none of these decides (no credentials that `anonymous` does not cover, an unknown
//!    user, a token that is not a JWT): the HTTP hook, if configured ([`hook`]).
//!
//! What the credentials grant is then matched against the request ([`permission`]). Secrets
//! are [`Secret`]s: they never reach a log, an error or a serialized configuration.

#![forbid(unsafe_code)]

pub mod credentials;
mod denial;
pub mod digest;
pub mod fuzz;
pub mod hook;
pub mod jwks;
pub mod jwt;
pub mod limiter;
pub mod password;
pub mod permission;
mod policy;
mod secret;
pub mod session;
pub mod settings;

pub use credentials::{Credentials, CredentialsError};
pub use permission::{Action, Permission, StreamPattern};
pub use policy::{Authenticator, Denial, DenialReason, Identity, Request};
pub use secret::Secret;
pub use settings::{AuthError, AuthSettings};

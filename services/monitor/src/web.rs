//! The dashboard over HTTP: the page, its static assets (everything served by the
//! binary, no external CDN), the JSON API, and the administrator sign-in.
//!
//! **Authentication.** Every page and API call needs a bearer token signed by a trusted
//! issuer and carrying the `admin` role: either `Authorization: Bearer <token>` (scripts,
//! curl) or the HttpOnly, SameSite=Strict cookie that the sign-in form sets from a token
//! pasted once (or handed over in the URL fragment `#token=...`, which the browser never
//! sends to the server). The cookie expires with the token. Without a valid credential the
//! API answers 401 and the page redirects to the sign-in form; a valid token without the
//! `admin` role gets 403.
//!
//! **Headers.** Every answer carries a strict Content-Security-Policy (scripts and styles
//! from this origin only, no inline code), `X-Frame-Options: DENY`, `nosniff`, no
//! referrer, and `Cache-Control: no-store` for anything but the assets.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use time::OffsetDateTime;

use casebus_integrity::token::{Audience, Claims, Role, TrustedIssuers};

use crate::collect::SharedModel;
use crate::metrics::MonitorMetrics;
use crate::model::Overview;

/// Name of the sign-in cookie.
pub const COOKIE: &str = "casebus_monitor";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const LOGIN_HTML: &str = include_str!("../assets/login.html");
const APP_JS: &str = include_str!("../assets/app.js");
const LOGIN_JS: &str = include_str!("../assets/login.js");
const APP_CSS: &str = include_str!("../assets/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// What the handlers share.
#[derive(Clone)]
pub struct Web {
    /// The model the collectors feed.
    pub model: SharedModel,
    /// The issuers whose admin tokens are accepted.
    pub issuers: Arc<TrustedIssuers>,
    /// Whether the cookie is marked `Secure`.
    pub secure_cookie: bool,
    /// How often the page refreshes, in milliseconds.
    pub page_refresh_ms: u64,
    /// Metrics (sign-ins).
    pub metrics: MonitorMetrics,
}

/// The outcome of authenticating a request.
#[derive(Debug)]
enum Auth {
    /// A valid admin token.
    Admin(Claims),
    /// No credential.
    Missing,
    /// A credential that is not valid (the reason, without the token).
    Refused(String),
    /// A valid token without the admin role.
    NotAdmin(Claims),
}

/// The token of a request: the bearer header first, else the cookie.
fn credential(headers: &HeaderMap) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        return Some(
            value
                .strip_prefix("Bearer ")
                .unwrap_or(value)
                .trim()
                .to_owned(),
        );
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn check(issuers: &TrustedIssuers, token: &str, now: OffsetDateTime) -> Auth {
    match issuers.verify(token, Audience::Monitor, now) {
        Ok(claims) if claims.has(Role::Admin) => Auth::Admin(claims),
        Ok(claims) => Auth::NotAdmin(claims),
        Err(e) => Auth::Refused(e.to_string()),
    }
}

fn authenticate(web: &Web, headers: &HeaderMap) -> Auth {
    match credential(headers) {
        Some(token) => check(&web.issuers, &token, OffsetDateTime::now_utc()),
        None => Auth::Missing,
    }
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn redirect(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to)]).into_response()
}

fn login_page(status: StatusCode, message: &str) -> Response {
    let message = if message.is_empty() {
        String::new()
    } else {
        format!(r#"<p class="error" role="alert">{}</p>"#, escape(message))
    };
    html(status, LOGIN_HTML.replace("{{message}}", &message))
}

fn json_error(status: StatusCode, message: &str) -> Response {
    let mut response =
        (status, axum::Json(serde_json::json!({ "error": message }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(r#"Bearer realm="casebus-monitor""#),
        );
    }
    response
}

/// The dashboard page, or the sign-in form for anyone not signed in.
async fn index(State(web): State<Web>, headers: HeaderMap) -> Response {
    match authenticate(&web, &headers) {
        Auth::Admin(claims) => {
            let page = INDEX_HTML
                .replace("{{actor}}", &escape(&claims.actor))
                .replace("{{office}}", &escape(claims.office.as_str()))
                .replace("{{refresh_ms}}", &web.page_refresh_ms.to_string());
            html(StatusCode::OK, page)
        }
        Auth::NotAdmin(_) => login_page(
            StatusCode::FORBIDDEN,
            "this token lacks the admin role; sign in with an administrator's token",
        ),
        Auth::Missing | Auth::Refused(_) => redirect("/login"),
    }
}

async fn login_form() -> Response {
    login_page(StatusCode::OK, "")
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn form_value(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let raw = text
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)?;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// A form POST must come from this origin. Browsers say where a request comes from in
/// `Sec-Fetch-Site`; older ones only in `Origin`, which is `null` under this page's
/// no-referrer policy, so `null` without `Sec-Fetch-Site` is refused. A request with
/// neither header is no browser's and carries no ambient cookie to abuse.
fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return site == "same-origin" || site == "none";
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest == host)
}

fn cookie(web: &Web, value: &str, max_age: i64) -> HeaderValue {
    let secure = if web.secure_cookie { "; Secure" } else { "" };
    let text =
        format!("{COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}");
    // Token characters are base64url and dots, all valid in a header.
    HeaderValue::from_str(&text)
        .unwrap_or_else(|_| HeaderValue::from_static("casebus_monitor=; Max-Age=0"))
}

/// Checks a pasted token and, when it is an admin's, sets the sign-in cookie.
async fn login(State(web): State<Web>, headers: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&headers) {
        web.metrics.logins.with_label_values(&["cross_site"]).inc();
        return login_page(StatusCode::FORBIDDEN, "sign-in refused: cross-site request");
    }
    let Some(token) = form_value(&body, "token").map(|t| t.trim().to_owned()) else {
        return login_page(StatusCode::BAD_REQUEST, "paste a token to sign in");
    };
    let now = OffsetDateTime::now_utc();
    match check(&web.issuers, &token, now) {
        Auth::Admin(claims) => {
            web.metrics.logins.with_label_values(&["ok"]).inc();
            tracing::info!(actor = %claims.actor, office = %claims.office, "administrator signed in");
            let max_age = (claims.exp - now.unix_timestamp()).max(0);
            let mut response = redirect("/");
            response
                .headers_mut()
                .insert(header::SET_COOKIE, cookie(&web, &token, max_age));
            response
        }
        Auth::NotAdmin(claims) => {
            web.metrics.logins.with_label_values(&["not_admin"]).inc();
            tracing::warn!(actor = %claims.actor, office = %claims.office, "sign-in refused: not an administrator");
            login_page(StatusCode::FORBIDDEN, "this token lacks the admin role")
        }
        Auth::Refused(reason) => {
            web.metrics.logins.with_label_values(&["refused"]).inc();
            tracing::warn!(reason = %reason, "sign-in refused");
            login_page(
                StatusCode::UNAUTHORIZED,
                &format!("sign-in refused: {reason}"),
            )
        }
        Auth::Missing => login_page(StatusCode::BAD_REQUEST, "paste a token to sign in"),
    }
}

async fn logout(State(web): State<Web>, headers: HeaderMap) -> Response {
    if !same_origin(&headers) {
        return login_page(
            StatusCode::FORBIDDEN,
            "sign-out refused: cross-site request",
        );
    }
    let mut response = redirect("/login");
    response
        .headers_mut()
        .insert(header::SET_COOKIE, cookie(&web, "", 0));
    response
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The overview, or the error answer for an unauthenticated request.
fn authorised_overview(web: &Web, headers: &HeaderMap) -> Result<Overview, Box<Response>> {
    match authenticate(web, headers) {
        Auth::Admin(_) => {
            let now = OffsetDateTime::now_utc();
            let overview = web
                .model
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .overview(now);
            Ok(overview)
        }
        Auth::Missing => Err(Box::new(json_error(
            StatusCode::UNAUTHORIZED,
            "sign in: send Authorization: Bearer <admin token>",
        ))),
        Auth::Refused(reason) => Err(Box::new(json_error(
            StatusCode::UNAUTHORIZED,
            &format!("token refused: {reason}"),
        ))),
        Auth::NotAdmin(_) => Err(Box::new(json_error(
            StatusCode::FORBIDDEN,
            "the token lacks the admin role",
        ))),
    }
}

/// A JSON answer with one part of the overview.
fn part(
    web: &Web,
    headers: &HeaderMap,
    pick: impl FnOnce(Overview) -> serde_json::Value,
) -> Response {
    match authorised_overview(web, headers) {
        Ok(overview) => axum::Json(pick(overview)).into_response(),
        Err(response) => *response,
    }
}

fn value<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

async fn api_overview(State(web): State<Web>, headers: HeaderMap) -> Response {
    part(&web, &headers, |o| value(&o))
}

async fn api_whoami(State(web): State<Web>, headers: HeaderMap) -> Response {
    match authenticate(&web, &headers) {
        Auth::Admin(c) => axum::Json(serde_json::json!({
            "actor": c.actor, "office": c.office.as_str(), "expires": c.exp, "roles": c.roles,
        }))
        .into_response(),
        Auth::NotAdmin(_) => json_error(StatusCode::FORBIDDEN, "the token lacks the admin role"),
        Auth::Missing | Auth::Refused(_) => json_error(StatusCode::UNAUTHORIZED, "sign in first"),
    }
}

/// Adds the security headers to every answer.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// The metrics port: `/metrics`, `/healthz` (alive), `/readyz` (the first sample of the
/// streams succeeded). No authentication, like every casebus service's metrics port.
pub fn metrics_router(
    metrics: MonitorMetrics,
    ready: Arc<std::sync::atomic::AtomicBool>,
) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(std::sync::atomic::Ordering::Relaxed) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

/// The dashboard's routes.
pub fn router(web: Web) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/assets/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/assets/login.js",
            get(|| async { asset("text/javascript; charset=utf-8", LOGIN_JS) }),
        )
        .route(
            "/assets/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route("/api/overview", get(api_overview))
        .route("/api/whoami", get(api_whoami))
        .route(
            "/api/throughput",
            get(|State(web): State<Web>, headers: HeaderMap| async move {
                part(&web, &headers, |o| {
                    serde_json::json!({ "throughput": value(&o.throughput), "event_types": value(&o.event_types) })
                })
            }),
        )
        .route(
            "/api/streams",
            get(|State(web): State<Web>, headers: HeaderMap| async move {
                part(&web, &headers, |o| value(&o.streams))
            }),
        )
        .route(
            "/api/consumers",
            get(|State(web): State<Web>, headers: HeaderMap| async move {
                part(&web, &headers, |o| value(&o.consumers))
            }),
        )
        .route(
            "/api/dead-letters",
            get(|State(web): State<Web>, headers: HeaderMap| async move {
                part(&web, &headers, |o| value(&o.dead_letters))
            }),
        )
        .route(
            "/api/verification",
            get(|State(web): State<Web>, headers: HeaderMap| async move {
                part(&web, &headers, |o| value(&o.verification_failures))
            }),
        )
        .route(
            "/api/overdue",
            get(|State(web): State<Web>, headers: HeaderMap| async move {
                part(&web, &headers, |o| value(&o.overdue))
            }),
        )
        .route(
            "/api/services",
            get(|State(web): State<Web>, headers: HeaderMap| async move {
                part(&web, &headers, |o| value(&o.services))
            }),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found") })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(web)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_comes_from_the_bearer_header_or_the_cookie() {
        let mut h = HeaderMap::new();
        assert_eq!(credential(&h), None);
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; casebus_monitor=cb1.a.b; x=y"),
        );
        assert_eq!(credential(&h).as_deref(), Some("cb1.a.b"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer cb1.c.d"),
        );
        assert_eq!(credential(&h).as_deref(), Some("cb1.c.d"));
    }

    #[test]
    fn form_values_are_percent_decoded() {
        assert_eq!(
            form_value(b"token=cb1.ab-_.cd&x=1", "token").as_deref(),
            Some("cb1.ab-_.cd")
        );
        assert_eq!(
            form_value(b"token=a%2Eb+c", "token").as_deref(),
            Some("a.b c")
        );
        assert_eq!(form_value(b"other=1", "token"), None);
        assert_eq!(form_value(b"token=%zz", "token"), None);
        assert_eq!(form_value(b"token=%4", "token"), None);
    }

    #[test]
    fn a_post_from_another_origin_is_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        assert!(same_origin(&h), "no Origin: not a browser cross-site POST");
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(same_origin(&h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example"),
        );
        assert!(!same_origin(&h));
        h.insert(header::ORIGIN, HeaderValue::from_static("null"));
        assert!(!same_origin(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(same_origin(&h), "the browser vouches for the origin");
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!same_origin(&h));
    }

    #[test]
    fn text_is_escaped_for_html() {
        assert_eq!(
            escape(r#"<b a="1">&'"#),
            "&lt;b a=&quot;1&quot;&gt;&amp;&#39;"
        );
    }
}

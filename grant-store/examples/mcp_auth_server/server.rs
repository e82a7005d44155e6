//! The server of `mcp_auth_server` (shared with the end-to-end tests, which run it as
//! separate processes): an MCP server over streamable HTTP that is its own OAuth
//! authorization server, with every grant in a token-store backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Form, Json, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use clap::Parser;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ListToolsResult,
    ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler};
use serde_json::{Value, json};
use token_store_grants::{
    AuthenticatedClient, AuthorizationRequest, ClientMetadata, GrantConfig, GrantError, GrantStore,
    RefreshOptions,
};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An MCP server that is its own OAuth authorization server.
#[derive(Parser, Debug, Clone)]
#[command(name = "mcp_auth_server")]
pub struct Options {
    /// Address to listen on (port 0: any free port; the URL is printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8940")]
    pub listen: SocketAddr,
    /// The public URL clients reach (behind a load balancer: the balancer's URL, the same
    /// for every replica). Default: http://<listen address>.
    #[arg(long)]
    pub base_url: Option<String>,
    /// Where grants live: sqlite://PATH (the embedded default), redis://HOST:PORT/?prefix=P
    /// shared by replicas, or any other token-store URL.
    #[arg(long, default_value = "sqlite://mcp-auth-server.db")]
    pub store: String,
    /// Users, one `name:$argon2id$...` line each (make a hash with `--hash-password`).
    #[arg(long)]
    pub users: Option<PathBuf>,
    /// Access-token lifetime, seconds.
    #[arg(long, default_value_t = 3600)]
    pub access_ttl: u64,
    /// Seconds between purges of expired codes, tokens and grants (0: never).
    #[arg(long, default_value_t = 600)]
    pub purge_interval: u64,
    /// Print the Argon2id hash of the password read from stdin, and exit.
    #[arg(long)]
    pub hash_password: bool,
}

/// The caller of an MCP request, as the bearer check found it.
#[derive(Clone, Debug)]
struct Caller {
    user: String,
    scopes: Vec<String>,
}

/// The one protected tool: who am I, and which replica answered.
#[derive(Clone)]
struct Tools;

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
    }

    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let Value::Object(schema) = json!({"type": "object", "properties": {}}) else {
            return Err(ErrorData::internal_error("schema", None));
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "whoami",
            "The logged-in user, the token's scopes and the replica that answered",
            schema,
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        if request.name != "whoami" {
            return Err(ErrorData::invalid_params("no such tool", None));
        }
        let caller = context
            .extensions
            .get::<axum::http::request::Parts>()
            .and_then(|parts| parts.extensions.get::<Caller>())
            .cloned()
            .ok_or_else(|| ErrorData::internal_error("no authenticated caller", None))?;
        let text = json!({
            "user": caller.user,
            "scopes": caller.scopes,
            "replica": std::process::id(),
        })
        .to_string();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

struct App {
    grants: GrantStore,
    base: String,
    resource: String,
    users: HashMap<String, String>,
    mcp: StreamableHttpService<Tools, LocalSessionManager>,
}

type Shared = State<Arc<App>>;

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut resp = (status, Json(body)).into_response();
    // Token responses must not be cached (RFC 6749 §5.1).
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn oauth_error(e: &GrantError) -> Response {
    if e.is_store() {
        tracing::error!("grant store failure: {e}");
    } else {
        tracing::info!(
            error = e.error_code(),
            "OAuth request refused: {}",
            e.description()
        );
    }
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut resp = json_response(status, e.to_json());
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"token\""),
        );
    }
    resp
}

/// The client's credentials: HTTP Basic (form-urlencoded id and secret, RFC 6749 §2.3.1) or
/// `client_id` / `client_secret` in the form.
async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Result<AuthenticatedClient, GrantError> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|b| String::from_utf8(b).ok());
    let (id, secret) = match &basic {
        Some(pair) => {
            let (id, secret) = pair
                .split_once(':')
                .ok_or(GrantError::InvalidClient("malformed Basic credentials"))?;
            let decode = |s: &str| {
                token_store_core::backend::percent_decode(&s.replace('+', " "))
                    .ok_or(GrantError::InvalidClient("malformed Basic credentials"))
            };
            (decode(id)?, Some(decode(secret)?))
        }
        None => (
            form.get("client_id")
                .cloned()
                .ok_or(GrantError::InvalidClient("client_id is missing"))?,
            form.get("client_secret").cloned(),
        ),
    };
    app.grants.authenticate_client(&id, secret.as_deref()).await
}

fn param<'a>(form: &'a HashMap<String, String>, name: &'static str) -> Result<&'a str, GrantError> {
    form.get(name)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or(GrantError::InvalidRequest(match name {
            "code" => "code is missing",
            "redirect_uri" => "redirect_uri is missing",
            "code_verifier" => "code_verifier is missing",
            "refresh_token" => "refresh_token is missing",
            "token" => "token is missing",
            _ => "a required parameter is missing",
        }))
}

fn same_resource(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

async fn token(
    State(app): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let result = async {
        let client = authenticate(&app, &headers, &form).await?;
        // The only resource this server has is its MCP endpoint.
        let resource = match form.get("resource") {
            Some(r) if !same_resource(r, &app.resource) => {
                return Err(GrantError::InvalidTarget("unknown resource"));
            }
            _ => None,
        };
        match form.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                app.grants
                    .exchange_code(
                        &client,
                        param(&form, "code")?,
                        param(&form, "redirect_uri")?,
                        param(&form, "code_verifier")?,
                        resource,
                    )
                    .await
            }
            Some("refresh_token") => {
                let mut options = RefreshOptions::new();
                if let Some(scope) = form.get("scope") {
                    options = options.with_scopes(scope.split_whitespace().map(str::to_owned));
                }
                app.grants
                    .refresh(&client, param(&form, "refresh_token")?, options)
                    .await
            }
            _ => Err(GrantError::InvalidRequest("unsupported grant_type")),
        }
    }
    .await;
    match result {
        Ok(tokens) => json_response(StatusCode::OK, tokens.to_json()),
        Err(GrantError::InvalidRequest("unsupported grant_type")) => json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": "unsupported_grant_type"}),
        ),
        Err(e) => oauth_error(&e),
    }
}

async fn revoke(
    State(app): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let result = async {
        let client = authenticate(&app, &headers, &form).await?;
        let token = param(&form, "token")?;
        Ok::<_, GrantError>(app.grants.revoke_token(&client, token).await?)
    }
    .await;
    match result {
        // RFC 7009 §2.2: 200 whether or not the token was valid.
        Ok(_) => json_response(StatusCode::OK, json!({})),
        Err(e) => oauth_error(&e),
    }
}

async fn introspect(
    State(app): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let result = async {
        let client = authenticate(&app, &headers, &form).await?;
        let answer = app.grants.introspect(param(&form, "token")?).await?;
        // A client learns only about its own tokens.
        if answer.client_id.as_deref() != Some(client.client_id()) {
            return Ok(token_store_grants::Introspection::inactive());
        }
        Ok::<_, GrantError>(answer)
    }
    .await;
    match result {
        Ok(answer) => json_response(
            StatusCode::OK,
            serde_json::to_value(answer).unwrap_or_default(),
        ),
        Err(e) => oauth_error(&e),
    }
}

async fn register(State(app): Shared, Json(metadata): Json<ClientMetadata>) -> Response {
    match app.grants.register_client(metadata).await {
        Ok(client) => {
            let uri = format!("{}/register/{}", app.base, client.client_id());
            tracing::info!(client_id = client.client_id(), "client registered");
            json_response(StatusCode::CREATED, client.to_json(Some(&uri)))
        }
        Err(e) => oauth_error(&e),
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
}

/// RFC 7592: read, update and delete a registration with its registration access token.
async fn manage_client(
    State(app): Shared,
    Path(client_id): Path<String>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let Some(rat) = bearer(&headers).map(str::to_owned) else {
        return oauth_error(&GrantError::InvalidClient(
            "registration access token required",
        ));
    };
    let method = request.method().clone();
    let result = match method.as_str() {
        "GET" => app
            .grants
            .check_registration_token(&client_id, &rat)
            .await
            .map(|c| json_response(StatusCode::OK, c.to_json())),
        "PUT" => {
            let body = axum::body::to_bytes(request.into_body(), 64 * 1024).await;
            match body
                .ok()
                .and_then(|b| serde_json::from_slice::<ClientMetadata>(&b).ok())
            {
                None => Err(GrantError::InvalidClientMetadata(
                    "the body is not client metadata",
                )),
                Some(metadata) => app
                    .grants
                    .update_client(&client_id, &rat, metadata)
                    .await
                    .map(|c| json_response(StatusCode::OK, c.to_json())),
            }
        }
        "DELETE" => app
            .grants
            .delete_client(&client_id, &rat)
            .await
            .map(|_| StatusCode::NO_CONTENT.into_response()),
        _ => Ok(StatusCode::METHOD_NOT_ALLOWED.into_response()),
    };
    result.unwrap_or_else(|e| oauth_error(&e))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const AUTH_PARAMS: [&str; 7] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "code_challenge",
    "code_challenge_method",
    "state",
    "scope",
];

/// Checks what must be right before anything is redirected back to the client.
async fn check_authorization(app: &App, q: &HashMap<String, String>) -> Result<(), GrantError> {
    if q.get("response_type").map(String::as_str) != Some("code") {
        return Err(GrantError::InvalidRequest("response_type must be code"));
    }
    app.grants
        .validate_authorization(param(q, "client_id")?, param(q, "redirect_uri")?)
        .await?;
    if let Some(r) = q.get("resource")
        && !same_resource(r, &app.resource)
    {
        return Err(GrantError::InvalidTarget("unknown resource"));
    }
    Ok(())
}

fn error_page(e: &GrantError) -> Response {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        Html(format!(
            "<h1>Authorization failed</h1><p>{}</p>",
            html_escape(e.description())
        )),
    )
        .into_response()
}

fn login_page(q: &HashMap<String, String>, failed: bool) -> Response {
    let mut hidden = String::new();
    for name in AUTH_PARAMS.iter().chain(["resource"].iter()) {
        if let Some(v) = q.get(*name) {
            hidden.push_str(&format!(
                "<input type=\"hidden\" name=\"{name}\" value=\"{}\">",
                html_escape(v)
            ));
        }
    }
    let note = if failed {
        "<p>Wrong user name or password.</p>"
    } else {
        ""
    };
    let status = if failed {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (
        status,
        Html(format!(
            "<!doctype html><title>Log in</title><h1>Log in to the MCP server</h1>{note}\
             <form method=\"post\" action=\"/authorize\">{hidden}\
             <label>User <input name=\"username\" autocomplete=\"username\"></label>\
             <label>Password <input name=\"password\" type=\"password\" autocomplete=\"current-password\"></label>\
             <button>Allow</button></form>"
        )),
    )
        .into_response()
}

async fn authorize_page(State(app): Shared, Query(q): Query<HashMap<String, String>>) -> Response {
    match check_authorization(&app, &q).await {
        Ok(()) => login_page(&q, false),
        Err(e) => error_page(&e),
    }
}

fn password_ok(app: &App, user: &str, password: &str) -> bool {
    use argon2::PasswordVerifier as _;
    // An unknown user costs the same Argon2id run as a known one.
    const DUMMY: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0cxS3VYe0Tl1U0bTaRkdQO5fNFpG1T0e4NGm8M9DD7Q";
    let hash = app.users.get(user).map(String::as_str).unwrap_or(DUMMY);
    let ok = argon2::Argon2::default()
        .verify_password(password.as_bytes(), hash)
        .is_ok();
    ok && app.users.contains_key(user)
}

/// The login form's POST (and a headless client's): checks the password, then issues the
/// code and redirects to the client.
async fn authorize_login(
    State(app): Shared,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Err(e) = check_authorization(&app, &form).await {
        return error_page(&e);
    }
    let user = form.get("username").cloned().unwrap_or_default();
    let password = form.get("password").cloned().unwrap_or_default();
    let checked = {
        let app = app.clone();
        let user = user.clone();
        tokio::task::spawn_blocking(move || password_ok(&app, &user, &password)).await
    };
    if !matches!(checked, Ok(true)) {
        tracing::info!("login refused");
        return login_page(&form, true);
    }
    let redirect = form.get("redirect_uri").cloned().unwrap_or_default();
    let mut request = AuthorizationRequest::new(
        form.get("client_id").cloned().unwrap_or_default(),
        redirect.clone(),
        user,
        form.get("code_challenge").cloned().unwrap_or_default(),
    )
    .with_challenge_method(
        form.get("code_challenge_method")
            .cloned()
            .unwrap_or_default(),
    )
    .with_resource(app.resource.clone());
    if let Some(scope) = form.get("scope") {
        request = request.with_scopes(scope.split_whitespace().map(str::to_owned));
    }
    let state = form.get("state").cloned();
    let mut location = match url::Url::parse(&redirect) {
        Ok(u) => u,
        Err(_) => return error_page(&GrantError::InvalidRequest("redirect_uri is not a URL")),
    };
    match app.grants.authorize(request).await {
        Ok(code) => {
            location
                .query_pairs_mut()
                .append_pair("code", code.expose());
        }
        // Past the client and redirect checks, errors go back to the client (RFC 6749 §4.1.2.1).
        Err(e) if !e.is_store() => {
            location
                .query_pairs_mut()
                .append_pair("error", e.error_code())
                .append_pair("error_description", e.description());
        }
        Err(e) => return error_page(&e),
    }
    {
        let mut pairs = location.query_pairs_mut();
        if let Some(state) = &state {
            pairs.append_pair("state", state);
        }
        pairs.append_pair("iss", &app.base);
    }
    Response::builder()
        .status(StatusCode::FOUND)
        .header(header::LOCATION, location.as_str())
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::empty())
        .unwrap_or_default()
}

async fn protected_resource(State(app): Shared) -> Response {
    json_response(
        StatusCode::OK,
        json!({
            "resource": app.resource,
            "authorization_servers": [app.base],
            "bearer_methods_supported": ["header"],
            "scopes_supported": ["mcp"],
        }),
    )
}

async fn as_metadata(State(app): Shared) -> Response {
    let b = &app.base;
    json_response(
        StatusCode::OK,
        json!({
            "issuer": b,
            "authorization_endpoint": format!("{b}/authorize"),
            "token_endpoint": format!("{b}/token"),
            "registration_endpoint": format!("{b}/register"),
            "revocation_endpoint": format!("{b}/revoke"),
            "introspection_endpoint": format!("{b}/introspect"),
            "response_types_supported": ["code"],
            "grant_types_supported": ["authorization_code", "refresh_token"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
            "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["mcp"],
            "authorization_response_iss_parameter_supported": true,
        }),
    )
}

/// The MCP endpoint: the bearer check (one store read), then rmcp.
async fn mcp_endpoint(State(app): Shared, mut request: Request) -> Response {
    let verified = match bearer(request.headers()) {
        Some(token) => app.grants.verify(token).await,
        None => Ok(None),
    };
    let grant = match verified {
        Ok(Some(g))
            if g.resource
                .as_deref()
                .is_none_or(|r| same_resource(r, &app.resource)) =>
        {
            g
        }
        Ok(_) => {
            let challenge = format!(
                "Bearer error=\"invalid_token\", resource_metadata=\"{}/.well-known/oauth-protected-resource/mcp\"",
                app.base
            );
            let mut resp = StatusCode::UNAUTHORIZED.into_response();
            if let Ok(v) = HeaderValue::from_str(&challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
            return resp;
        }
        Err(e) => {
            tracing::error!("bearer check failed: {e}");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    };
    // rmcp needs no credential: the bearer token goes no further than this check.
    request.headers_mut().remove(header::AUTHORIZATION);
    request.extensions_mut().insert(Caller {
        user: grant.user_id.clone(),
        scopes: grant.scopes.clone(),
    });
    let mut resp = app.mcp.handle(request).await.map(Body::new);
    if let Ok(v) = HeaderValue::from_str(&std::process::id().to_string()) {
        resp.headers_mut().insert("x-replica", v);
    }
    resp
}

fn load_users(path: Option<&PathBuf>) -> Result<HashMap<String, String>, BoxError> {
    let Some(path) = path else {
        return Ok(HashMap::new());
    };
    let text = std::fs::read_to_string(path)?;
    let mut users = HashMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (name, hash) = line
            .split_once(':')
            .ok_or("a users line is not name:$argon2id$...")?;
        if !hash.starts_with("$argon2id$") {
            return Err("users must have Argon2id password hashes".into());
        }
        users.insert(name.to_owned(), hash.to_owned());
    }
    Ok(users)
}

/// The Argon2id hash (PHC string) of a password, for the users file.
pub fn hash_password(password: &str) -> Result<String, BoxError> {
    use argon2::PasswordHasher as _;
    let hash = argon2::Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| format!("hashing failed: {e}"))?;
    Ok(hash.to_string())
}

/// Runs the server until the process ends.
pub async fn serve(options: Options) -> Result<(), BoxError> {
    if options.hash_password {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        println!("{}", hash_password(line.trim_end_matches(['\r', '\n']))?);
        return Ok(());
    }
    let store = token_store::open(&options.store).await?;
    let grants = GrantStore::with_config(
        store,
        GrantConfig::new().with_access_token_ttl(Duration::from_secs(options.access_ttl)),
    )?;
    if options.purge_interval > 0 {
        // Backends without TTLs keep expired records until purged; every replica may purge.
        let grants = grants.clone();
        let every = Duration::from_secs(options.purge_interval);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match grants.purge_expired().await {
                    Ok(report) => tracing::info!(?report, "purged expired grant records"),
                    Err(e) => tracing::warn!("purge failed: {e}"),
                }
            }
        });
    }
    let listener = tokio::net::TcpListener::bind(options.listen).await?;
    let local = listener.local_addr()?;
    let base = options
        .base_url
        .clone()
        .unwrap_or_else(|| format!("http://{local}"))
        .trim_end_matches('/')
        .to_owned();
    let host = url::Url::parse(&base)?
        .host_str()
        .map(str::to_owned)
        .ok_or("the base URL has no host")?;
    // Stateless MCP: any replica answers any request, nothing per session to share.
    let mcp = StreamableHttpService::new(
        || Ok(Tools),
        Arc::new(LocalSessionManager::default()),
        StreamableHttpServerConfig::default()
            .with_legacy_session_mode(false)
            .with_json_response(true)
            .with_allowed_hosts([host, "127.0.0.1".to_owned(), "localhost".to_owned()]),
    );
    let app = Arc::new(App {
        grants,
        resource: format!("{base}/mcp"),
        base: base.clone(),
        users: load_users(options.users.as_ref())?,
        mcp,
    });
    let router = Router::new()
        .route(
            "/.well-known/oauth-protected-resource",
            get(protected_resource),
        )
        .route(
            "/.well-known/oauth-protected-resource/mcp",
            get(protected_resource),
        )
        .route("/.well-known/oauth-authorization-server", get(as_metadata))
        .route(
            "/.well-known/oauth-authorization-server/mcp",
            get(as_metadata),
        )
        .route("/register", post(register))
        .route(
            "/register/{client_id}",
            get(manage_client).put(manage_client).delete(manage_client),
        )
        .route("/authorize", get(authorize_page).post(authorize_login))
        .route("/token", post(token))
        .route("/revoke", post(revoke))
        .route("/introspect", post(introspect))
        .route(
            "/mcp",
            get(mcp_endpoint).post(mcp_endpoint).delete(mcp_endpoint),
        )
        .with_state(app);
    println!("listening on http://{local} as {base}");
    tracing::info!(store = %token_store_core::StoreUrl::parse(&options.store).map(|u| u.redacted()).unwrap_or_default(), "serving MCP at {base}/mcp");
    axum::serve(listener, router).await?;
    Ok(())
}

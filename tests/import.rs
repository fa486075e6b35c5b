//! `switchboard import`: templates in tests/fixtures/ in, configuration the gateway's own
//! loader accepts out, and a report of everything left behind. The last tests run the
//! real binary.
//!
//! Set `SWITCHBOARD_UPDATE_FIXTURES=1` to rewrite `expected.toml` after a deliberate change.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use switchboard::config::{
    self, ConfigSource, IntegrationSettings, LambdaFunctionSettings, ManagementAuth, Settings,
};
use switchboard::import::{self, AccessKey, Format, ImportError, Imported, Options};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn options(out_dir: &Path) -> Options {
    Options {
        format: None,
        region: None,
        stack_name: None,
        stage: None,
        api: None,
        out_dir: out_dir.to_owned(),
        env: BTreeMap::new(),
        access_key: AccessKey {
            id: "AKIAIMPORTTEST000000".into(),
            secret: "import-test-secret-not-for-production00".into(),
        },
    }
}

fn import_with(template: &str, options: &Options) -> Result<Imported, ImportError> {
    import::import_file(&fixtures().join(template), options)
}

/// Imports a fixture, writing (in the options) next to the template.
fn import(template: &str) -> Imported {
    let dir = fixtures().join(template);
    let dir = dir.parent().unwrap();
    import_with(template, &options(dir)).unwrap_or_else(|e| panic!("{template}: {e}"))
}

/// Loads configuration text with the gateway's own loader (which validates the `lambda`
/// integrations' settings), then builds the API from it, which parses the route selection
/// expression. The `lambda` integrations are swapped for mocks for that build only:
/// building one looks for the Runtime Interface Client launchers, which this test does not
/// install (tests/lambda.rs runs real handlers).
fn load(text: &str) -> Settings {
    let settings = config::load(ConfigSource::Text(text), Vec::new())
        .unwrap_or_else(|e| panic!("the imported configuration does not load: {e}\n{text}"));
    let mut without_workers = settings.clone();
    for integration in without_workers.integrations.values_mut() {
        if matches!(integration, IntegrationSettings::Lambda(_)) {
            *integration = IntegrationSettings::Mock {
                template: String::new(),
                status: 200,
            };
        }
    }
    let http = switchboard::integrations::http::build_client(&without_workers.http_client);
    switchboard::api::Api::build(&without_workers, &http)
        .unwrap_or_else(|e| panic!("the API builds: {e}"));
    settings
}

/// The `lambda` settings of an integration, as the loader read them.
fn lambda<'a>(settings: &'a Settings, name: &str) -> &'a LambdaFunctionSettings {
    match settings.integrations.get(name) {
        Some(IntegrationSettings::Lambda(function)) => function,
        other => panic!("{name} is not a lambda integration: {other:?}"),
    }
}

fn has_line(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[test]
fn sam_fixture_writes_the_expected_toml() {
    let imported = import("sam/simple-chat/template.yaml");
    assert_eq!(imported.format, Format::Sam);
    let expected_path = fixtures().join("sam/simple-chat/expected.toml");
    if std::env::var_os("SWITCHBOARD_UPDATE_FIXTURES").is_some() {
        std::fs::write(&expected_path, &imported.toml).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    assert_eq!(
        imported.toml, expected,
        "the import of sam/simple-chat changed; if on purpose, rerun with SWITCHBOARD_UPDATE_FIXTURES=1"
    );
}

#[test]
fn sam_fixture_loads_with_routes_integrations_and_stage() {
    let imported = import("sam/simple-chat/template.yaml");
    let settings = load(&imported.toml);
    assert_eq!(settings.api.stages, ["Prod"]);
    assert_eq!(
        settings.api.route_selection_expression,
        "$request.body.action"
    );
    assert_eq!(settings.management.auth, ManagementAuth::Sigv4);
    assert!(
        settings.client.callbacks,
        "@connections where AWS handlers look"
    );
    assert_eq!(settings.lambda.region, "us-east-1");
    let routes: Vec<(&str, &str, bool)> = settings
        .routes
        .iter()
        .map(|(k, r)| (k.as_str(), r.integration.as_str(), r.two_way))
        .collect();
    assert_eq!(
        routes,
        [
            ("$connect", "onconnect", false),
            ("$disconnect", "ondisconnect", false),
            ("sendmessage", "sendmessage", true),
        ]
    );

    let onconnect = lambda(&settings, "onconnect");
    assert_eq!(onconnect.runtime, "nodejs20.x", "from Globals");
    assert_eq!(onconnect.handler, "app.handler");
    assert_eq!(onconnect.code_dir, Path::new("onconnect/"));
    assert_eq!(onconnect.timeout_ms, 3000);
    assert_eq!(onconnect.memory_mb, 256);
    assert_eq!(
        onconnect.function_name.as_deref(),
        Some("OnConnectFunction")
    );
    assert_eq!(
        onconnect.environment["TABLE_NAME"],
        "simplechat_connections"
    );
    assert_eq!(
        onconnect.environment["LOG_LEVEL"], "info",
        "merged from Globals"
    );
    assert!(
        !onconnect.environment.contains_key("AWS_ACCESS_KEY_ID"),
        "no ManageConnections permission, no credentials"
    );
    for name in ["onconnect", "ondisconnect", "sendmessage"] {
        let dir = fixtures()
            .join("sam/simple-chat")
            .join(&lambda(&settings, name).code_dir);
        assert!(dir.join("app.js").is_file(), "{name}: {}", dir.display());
    }

    let send = lambda(&settings, "sendmessage");
    assert_eq!(send.timeout_ms, 10_000);
    assert_eq!(send.memory_mb, 128, "SAM's default");
    assert_eq!(
        send.function_name.as_deref(),
        Some("switchboard-sendmessage"),
        "FunctionName: !Sub with AWS::StackName"
    );
    assert_eq!(
        send.environment["TABLE_ARN"],
        "arn:aws:dynamodb:us-east-1:000000000000:table/simplechat_connections"
    );
    assert!(
        !send.environment.contains_key("SHARED_BUS"),
        "unresolved: commented out"
    );
    assert!(
        imported
            .toml
            .contains("# SHARED_BUS = ?  not resolved: Fn::ImportValue")
    );
    assert_eq!(
        send.environment["AWS_ACCESS_KEY_ID"], "AKIAIMPORTTEST000000",
        "its policy allows execute-api:ManageConnections"
    );
    let key = settings.management.sigv4.access_keys[0].expose();
    assert_eq!(
        key,
        format!(
            "{}:{}",
            send.environment["AWS_ACCESS_KEY_ID"], send.environment["AWS_SECRET_ACCESS_KEY"]
        ),
        "the function signs with a key the management API accepts"
    );
}

#[test]
fn sam_report_names_what_is_left_and_the_environment() {
    let imported = import("sam/simple-chat/template.yaml");
    let report = &imported.report;
    for needle in [
        "ConnectionsTable (AWS::DynamoDB::Table)",
        "OnConnectPermission (AWS::Lambda::Permission)",
        "Deployment (AWS::ApiGatewayV2::Deployment)",
        "OnConnectFunction Policies: IAM",
        "output WebSocketURI",
    ] {
        assert!(
            has_line(&report.not_translated, needle),
            "{needle} missing from {:#?}",
            report.not_translated
        );
    }
    let table_name = report
        .environment
        .iter()
        .find(|e| e.function == "OnDisconnectFunction" && e.name == "TABLE_NAME")
        .expect("TABLE_NAME of OnDisconnectFunction");
    assert_eq!(table_name.value.as_deref(), Ok("simplechat_connections"));
    assert!(
        has_line(
            &table_name.how,
            "!Ref ConnectionsTable → \"simplechat_connections\" (the AWS::DynamoDB::Table's TableName)"
        ),
        "{:?}",
        table_name.how
    );
    let unresolved: Vec<&str> = report
        .unresolved_variables()
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(unresolved, ["SHARED_BUS"]);
    let text = report.render();
    assert!(
        text.contains("SHARED_BUS NOT RESOLVED, set it by hand"),
        "{text}"
    );
    assert!(
        imported
            .toml
            .starts_with("# Written by `switchboard import`."),
        "the report heads the file as comments"
    );
    assert!(
        imported
            .toml
            .contains("#   - ConnectionsTable (AWS::DynamoDB::Table)")
    );
}

#[test]
fn code_dir_is_relative_to_the_written_file() {
    let imported = import_with("sam/simple-chat/template.yaml", &options(&fixtures())).unwrap();
    let settings = load(&imported.toml);
    assert_eq!(
        lambda(&settings, "onconnect").code_dir,
        Path::new("sam/simple-chat/onconnect/")
    );
    let deeper = fixtures().join("sam/simple-chat/onconnect");
    let imported = import_with("sam/simple-chat/template.yaml", &options(&deeper)).unwrap();
    let settings = load(&imported.toml);
    assert_eq!(
        lambda(&settings, "sendmessage").code_dir,
        Path::new("../sendmessage/")
    );
}

#[test]
fn cloudformation_json_with_an_authorizer() {
    let mut opts = options(&fixtures().join("sam/cloudformation-json"));
    opts.region = Some("eu-central-1".into());
    let imported = import_with("sam/cloudformation-json/template.json", &opts).unwrap();
    let settings = load(&imported.toml);
    assert_eq!(
        settings.api.stages,
        ["live"],
        "StageName from a parameter's Default"
    );
    assert_eq!(
        settings.api.route_selection_expression,
        "$request.body.type"
    );
    assert_eq!(settings.management.sigv4.region, "eu-central-1");
    assert_eq!(settings.routes["$connect"].integration, "connecthandler");
    assert!(settings.routes["$default"].two_way);
    assert_eq!(
        settings.auth.authorizer,
        config::AuthorizerKind::None,
        "the lambda authorizer is only a commented block"
    );

    assert_eq!(settings.lambda.region, "eu-central-1");
    let connect = lambda(&settings, "connecthandler");
    assert_eq!(connect.runtime, "python3.12");
    assert_eq!(connect.memory_mb, 512, "Fn::If on a condition");
    assert_eq!(connect.timeout_ms, 5000);
    assert_eq!(
        connect.code_dir,
        Path::new("connecthandler/"),
        "S3 code: a directory to fill"
    );
    assert_eq!(connect.environment["STAGE"], "live");
    assert_eq!(connect.environment["REGION_NAME"], "eu-central-1");
    assert!(!connect.environment.contains_key("ENDPOINT"));
    let default = lambda(&settings, "defaulthandler");
    assert_eq!(default.code_dir, Path::new("src/default/"));
    assert_eq!(default.function_name.as_deref(), Some("chat-default"));

    assert!(
        imported
            .toml
            .contains("\n# [auth]\n# authorizer = \"http\"\n")
    );
    assert!(imported.toml.contains(
        "# identity_sources = [\"route.request.header.Authorization\", \"route.request.querystring.token\"]"
    ));
    let report = &imported.report;
    assert!(has_line(
        &report.not_translated,
        "authorizer ConnectAuthorizer: not translated, because"
    ));
    assert!(has_line(
        &report.not_translated,
        "ConnectHandler code: in S3"
    ));
    assert!(has_line(&report.not_translated, "AuthHandler code: inline"));
    assert!(has_line(
        &report.not_translated,
        "IdentitySource stageVariables.secret"
    ));
    assert!(has_line(
        &report.not_translated,
        "HandlerRole (AWS::IAM::Role)"
    ));
    let endpoint = report
        .environment
        .iter()
        .find(|e| e.name == "ENDPOINT")
        .unwrap();
    assert!(endpoint.value.as_ref().unwrap_err().contains("ApiEndpoint"));
}

#[test]
fn serverless_websocket_events() {
    let imported = import("serverless/chat/serverless.yml");
    assert_eq!(imported.format, Format::Serverless);
    let settings = load(&imported.toml);
    assert_eq!(
        settings.api.stages,
        ["dev"],
        "the default of ${{opt:stage, 'dev'}}"
    );
    assert_eq!(
        settings.management.sigv4.region, "eu-west-1",
        "provider.region"
    );
    let routes: Vec<(&str, &str, bool)> = settings
        .routes
        .iter()
        .map(|(k, r)| (k.as_str(), r.integration.as_str(), r.two_way))
        .collect();
    assert_eq!(
        routes,
        [
            ("$connect", "connect", false),
            ("$default", "message", true),
            ("$disconnect", "disconnect", false),
        ]
    );
    let message = lambda(&settings, "message");
    assert_eq!(message.handler, "src/handler.message");
    assert_eq!(message.code_dir, Path::new("./"), "the service directory");
    assert_eq!(message.timeout_ms, 10_000);
    assert_eq!(message.memory_mb, 256, "provider.memorySize");
    assert_eq!(
        message.function_name.as_deref(),
        Some("sls-chat-dev-message")
    );
    let env = &message.environment;
    assert_eq!(env["CONNECTIONS_TABLE"], "sls-chat-connections-dev");
    assert_eq!(
        env["TABLE_ARN"],
        "arn:aws:dynamodb:eu-west-1:000000000000:table/sls-chat-connections-dev"
    );
    assert!(!env.contains_key("SECRET"));
    assert_eq!(
        env["AWS_ACCESS_KEY_ID"], "AKIAIMPORTTEST000000",
        "provider.iam allows execute-api:ManageConnections"
    );
    assert_eq!(
        lambda(&settings, "connect").timeout_ms,
        6000,
        "serverless's default"
    );

    let report = &imported.report;
    assert!(has_line(
        &report.not_translated,
        "authorizer auth: not translated, because"
    ));
    assert!(has_line(
        &report.not_translated,
        "function cron: no websocket event"
    ));
    assert!(has_line(
        &report.not_translated,
        "plugin serverless-offline"
    ));
    assert!(has_line(
        &report.not_translated,
        "ConnectionsTable (AWS::DynamoDB::Table)"
    ));
    let secret = report
        .environment
        .iter()
        .find(|e| e.name == "SECRET")
        .unwrap();
    assert!(secret.value.as_ref().unwrap_err().contains("ssm"));
    let table_name = report
        .environment
        .iter()
        .find(|e| e.function == "message" && e.name == "CONNECTIONS_TABLE")
        .unwrap();
    assert_eq!(table_name.how, ["expanded from ${self:custom.tableName}"]);
    assert!(imported.toml.contains(
        "# identity_sources = [\"route.request.header.Auth\", \"route.request.querystring.token\"]"
    ));
}

#[test]
fn serverless_stage_and_region_flags() {
    let mut opts = options(&fixtures().join("serverless/chat"));
    opts.stage = Some("prod".into());
    opts.region = Some("ap-south-1".into());
    let imported = import_with("serverless/chat/serverless.yml", &opts).unwrap();
    let settings = load(&imported.toml);
    assert_eq!(settings.api.stages, ["prod"]);
    let env = &lambda(&settings, "message").environment;
    assert_eq!(env["CONNECTIONS_TABLE"], "sls-chat-connections-prod");
    assert_eq!(
        env["TABLE_ARN"],
        "arn:aws:dynamodb:ap-south-1:000000000000:table/sls-chat-connections-prod"
    );
}

#[test]
fn a_route_that_cannot_be_followed_is_reported_not_fatal() {
    let imported = import("sam/unresolvable-target.yaml");
    let settings = load(&imported.toml);
    assert_eq!(settings.routes.keys().collect::<Vec<_>>(), ["$default"]);
    let report = &imported.report;
    assert!(has_line(
        &report.not_translated,
        "route ghost (GhostRoute): its Target cannot be resolved: !Ref NoSuchIntegration"
    ));
    assert!(has_line(
        &report.not_translated,
        "route elsewhere (ElsewhereRoute): integration ElsewhereInteg calls the function \"owned-by-another-stack\""
    ));
    assert!(has_line(&report.notes, "[api] stages keeps the default"));
}

#[test]
fn refusals_name_the_problem() {
    let here = options(&fixtures());
    let err = import_with("sam/http-api.yaml", &here).unwrap_err();
    assert!(matches!(err, ImportError::NotWebSocket { .. }), "{err}");
    assert!(
        err.to_string().contains("HttpApi (ProtocolType HTTP)"),
        "{err}"
    );

    let err = import_with("sam/broken.yaml", &here).unwrap_err();
    assert!(
        matches!(err, ImportError::Syntax { syntax: "YAML", .. }),
        "{err}"
    );
    assert!(err.to_string().contains("line 5"), "{err}");

    let err = import_with("sam/missing.yaml", &here).unwrap_err();
    assert!(matches!(err, ImportError::Read { .. }), "{err}");

    let err = import_with("auth/../../../Cargo.toml", &here).unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::Syntax { .. } | ImportError::UnknownFormat { .. }
        ),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.yaml");
    std::fs::write(&plain, "hello: world\n").unwrap();
    let err = import::import_file(&plain, &here).unwrap_err();
    assert!(matches!(err, ImportError::UnknownFormat { .. }), "{err}");

    let mut forced = options(&fixtures());
    forced.format = Some(Format::Serverless);
    let err = import_with("sam/simple-chat/template.yaml", &forced).unwrap_err();
    assert!(err.to_string().contains("not a serverless.yml"), "{err}");

    let mut wrong_api = options(&fixtures());
    wrong_api.api = Some("Nope".into());
    let err = import_with("sam/simple-chat/template.yaml", &wrong_api).unwrap_err();
    assert!(err.to_string().contains("--api Nope"), "{err}");
}

fn switchboard(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .output()
        .expect("run switchboard");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_binary_writes_the_file_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("switchboard.toml");
    let template = fixtures().join("sam/simple-chat/template.yaml");
    let (code, stderr) = switchboard(&[
        "import",
        template.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("Not translated:"), "{stderr}");
    assert!(stderr.contains("SHARED_BUS NOT RESOLVED"), "{stderr}");
    let written = std::fs::read_to_string(&out).unwrap();
    let settings = load(&written);
    assert_eq!(settings.routes.len(), 3);
    let key = &settings.management.sigv4.access_keys[0];
    assert!(key.expose().starts_with("AKIA"), "a generated key pair");

    let (code, stderr) = switchboard(&[
        "import",
        template.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        code, 73,
        "an existing file is kept without --force: {stderr}"
    );
    assert!(stderr.contains("--force"), "{stderr}");
}

#[test]
fn the_binary_exits_64_naming_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("switchboard.toml");
    for (fixture, needle) in [
        ("sam/broken.yaml", "not valid YAML"),
        ("sam/http-api.yaml", "WEBSOCKET"),
        ("sam/missing.yaml", "cannot read"),
    ] {
        let template = fixtures().join(fixture);
        let (code, stderr) = switchboard(&[
            "import",
            template.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_eq!(code, 64, "{fixture}: {stderr}");
        assert!(
            stderr.contains(fixture),
            "{fixture}: names the file: {stderr}"
        );
        assert!(stderr.contains(needle), "{fixture}: {stderr}");
        assert!(!out.exists(), "{fixture}: nothing written");
    }
}

// ---------------------------------------------------------------------------------------
// The whole way: import, serve, run the handlers, call back.

mod common;

/// The test venv's Python with `awslambdaric` and `boto3` (scripts/test.sh,
/// scripts/lambda-rics.sh), as tests/lambda.rs uses it.
fn python() -> PathBuf {
    let venv = std::env::var("SWITCHBOARD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/pyvenv")));
    let python = venv.join("bin").join("python");
    let ok = Command::new(&python)
        .args(["-c", "import awslambdaric, boto3"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} has no awslambdaric and boto3: run scripts/test.sh (or scripts/lambda-rics.sh and pip install boto3)",
        python.display()
    );
    python
}

/// The next text frame (handlers start cold: up to 30 s), else the gateway's logs.
async fn next_text<S>(ws: &mut S, gw: &common::Gateway) -> String
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    match tokio::time::timeout(std::time::Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}\n{}", gw.raw_logs()),
    }
}

/// A Python app written for AWS (tests/fixtures/sam/python-chat): imported as it is, served
/// over wss, its handlers run by AWS's Python RIC, and its boto3 `post_to_connection` to
/// `https://{domainName}/{stage}` signed with the key pair the import generated and gave
/// it. Only what the report asks the operator to add is added: TLS for `https://`, the
/// test CA for boto3, and where the Python launcher is.
#[tokio::test]
async fn an_imported_python_app_runs_unchanged() {
    use futures_util::SinkExt as _;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let python = python();
    let fixture = fixtures().join("sam/python-chat");
    let imported = import("sam/python-chat/template.yaml");
    let tls = fixtures().join("tls");
    let tls = tls.display();
    let config = imported
        .toml
        .replace(
            "code_dir = \"",
            &format!("code_dir = \"{}/", fixture.display()),
        )
        .replace(
            "[integrations.send.environment]\n",
            &format!("[integrations.send.environment]\nAWS_CA_BUNDLE = \"{tls}/ca.pem\"\n"),
        )
        + &format!(
            "\n[client.tls]\ncert_file = \"{tls}/cert.pem\"\nkey_file = \"{tls}/key.pem\"\n"
        );
    let gw = common::Gateway::start_with_env(
        &config,
        &[("SWITCHBOARD__LAMBDA__PYTHON", python.to_str().unwrap())],
    )
    .await;

    let tcp = tokio::net::TcpStream::connect(gw.client_addr)
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = common::test_ca_connector()
        .connect(name, tcp)
        .await
        .expect("TLS");
    let request = format!("wss://localhost:{}/dev", gw.client_addr.port())
        .into_client_request()
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "upgrade ($connect runs app.connect): {e}\n{}",
                gw.raw_logs()
            )
        });

    ws.send(Message::text(r#"{"action":"nothing-routed","n":1}"#))
        .await
        .unwrap();
    let reply: serde_json::Value = serde_json::from_str(&next_text(&mut ws, &gw).await).unwrap();
    assert_eq!(
        reply,
        serde_json::json!({"echo": {"action": "nothing-routed", "n": 1}, "stage": "dev"}),
        "$default is two-way (its $default route response)"
    );

    ws.send(Message::text(
        r#"{"action":"sendmessage","data":"through @connections"}"#,
    ))
    .await
    .unwrap();
    assert_eq!(next_text(&mut ws, &gw).await, "through @connections");
}

//! An AWS WebSocket app, unchanged, on Switchboard: examples/aws-sam-chat (a SAM template,
//! Node.js handlers on the AWS SDK for JavaScript v3, Python handlers on boto3, connection
//! ids in DynamoDB, messages through `PostToConnection` signed with SigV4) is imported from
//! its `template.yaml` by the real binary and served by it. DynamoDB is a real local server
//! (moto in server mode); two real WebSocket clients chat over wss.
//!
//! The operator's part — what AWS would otherwise provide — is given the way an operator
//! would: environment overrides on top of the imported file, which is not edited. TLS on the
//! client listener and its public name, where the Runtime Interface Clients are, and
//! `[lambda.environment]` for every function: DynamoDB's endpoint, the CA that signed the
//! gateway's certificate (for the SDKs' `https://{domainName}/{stage}` calls), credentials
//! for DynamoDB.
//!
//! Needs what scripts/test.sh installs: the RICs (scripts/lambda-rics.sh), moto and boto3 in
//! the test venv (tests/python/requirements.txt), the example's npm packages
//! (scripts/example-deps.sh).
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Gateway, free_port, test_ca_connector};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn example() -> PathBuf {
    repo().join("examples/aws-sam-chat")
}

/// The table the template names (its `TableName` parameter's default).
const TABLE: &str = "aws_sam_chat_connections";

/// The test venv (scripts/test.sh): awslambdaric, boto3, moto[server].
fn venv() -> PathBuf {
    std::env::var("SWITCHBOARD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("target/pyvenv"))
}

/// What this test needs installed, each with how to install it.
struct Tools {
    python: PathBuf,
    moto_server: PathBuf,
    node_ric: PathBuf,
}

fn tools() -> Tools {
    let venv = venv();
    let python = venv.join("bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import awslambdaric, boto3, moto"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} lacks awslambdaric, boto3 or moto: run scripts/test.sh (pip install -r tests/python/requirements.txt)",
        python.display()
    );
    let moto_server = venv.join("bin/moto_server");
    assert!(
        moto_server.exists(),
        "{} is missing: pip install 'moto[server]'",
        moto_server.display()
    );
    let node_ric = repo().join("target/lambda-ric/node_modules/.bin/aws-lambda-ric");
    assert!(
        node_ric.exists(),
        "{} is missing: run scripts/lambda-rics.sh",
        node_ric.display()
    );
    let sdk = example().join("node/node_modules/@aws-sdk/client-apigatewaymanagementapi");
    assert!(
        sdk.is_dir(),
        "{} is missing: run scripts/example-deps.sh (npm ci in examples/aws-sam-chat/node)",
        sdk.display()
    );
    Tools {
        python,
        moto_server,
        node_ric,
    }
}

/// moto in server mode: a DynamoDB-compatible endpoint on 127.0.0.1. Killed on drop.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    fn start(moto_server: &Path) -> Moto {
        let port = free_port();
        let child = Command::new(moto_server)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port} in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a boto3 snippet against moto's DynamoDB, as an operator's script (or the AWS CLI)
/// would; `table` is the boto3 Table resource. Returns what it prints.
fn dynamodb(tools: &Tools, moto: &Moto, code: &str) -> String {
    let script = format!(
        "import boto3, json\n\
         db = boto3.resource('dynamodb', endpoint_url='{}', region_name='us-east-1',\n\
                             aws_access_key_id='operator', aws_secret_access_key='operator')\n\
         table = db.Table('{TABLE}')\n{code}\n",
        moto.endpoint
    );
    let out = Command::new(&tools.python)
        .args(["-c", &script])
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "boto3 against moto failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The connection ids stored in the table.
fn stored_ids(tools: &Tools, moto: &Moto) -> BTreeSet<String> {
    let out = dynamodb(
        tools,
        moto,
        "print(json.dumps([i['connectionId'] for i in table.scan()['Items']]))",
    );
    serde_json::from_str(&out).expect("a JSON list")
}

/// Waits (at most 30 s) until the table holds exactly `expected`.
async fn wait_stored(tools: &Tools, moto: &Moto, gw: &Gateway, expected: &BTreeSet<String>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ids = stored_ids(tools, moto);
        if &ids == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the table holds {ids:?}, expected {expected:?}\n{}",
            gw.raw_logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A WebSocket client on `wss://localhost:<port>/Prod` ($connect runs the Node handler,
/// cold: up to 30 s).
async fn connect(gw: &Gateway) -> Wss {
    let port = gw.client_addr.port();
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect(gw.client_addr).await?;
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = test_ca_connector().connect(name, tcp).await?;
        let request = format!("wss://localhost:{port}/Prod")
            .into_client_request()
            .unwrap();
        tokio_tungstenite::client_async(request, stream)
            .await
            .map(|(ws, _)| ws)
            .map_err(std::io::Error::other)
    };
    match tokio::time::timeout(Duration::from_secs(30), attempt).await {
        Ok(Ok(ws)) => ws,
        other => panic!("wss connect: {other:?}\n{}", gw.raw_logs()),
    }
}

/// The next text frame (at most 30 s: a handler may start cold).
async fn next_text(ws: &mut Wss, gw: &Gateway) -> String {
    match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}\n{}", gw.raw_logs()),
    }
}

/// Nothing arrives for `wait`.
async fn expect_silence(ws: &mut Wss, wait: Duration) {
    if let Ok(frame) = tokio::time::timeout(wait, ws.next()).await {
        panic!("expected nothing, got {frame:?}");
    }
}

async fn send(ws: &mut Wss, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// Asks the Python `whoami` route (boto3 `post_to_connection`) who this client is.
async fn whoami(ws: &mut Wss, gw: &Gateway) -> Value {
    send(ws, r#"{"action":"whoami"}"#).await;
    serde_json::from_str(&next_text(ws, gw).await).expect("whoami answers JSON")
}

#[tokio::test]
async fn the_sam_chat_app_runs_unchanged_with_dynamodb_and_two_clients() {
    let tools = tools();
    let moto = Moto::start(&tools.moto_server);
    // The operator creates the table the import report asks for.
    dynamodb(
        &tools,
        &moto,
        "db.create_table(TableName=table.name, BillingMode='PAY_PER_REQUEST',\n\
         AttributeDefinitions=[{'AttributeName': 'connectionId', 'AttributeType': 'S'}],\n\
         KeySchema=[{'AttributeName': 'connectionId', 'KeyType': 'HASH'}])",
    );

    // switchboard import, as the guide says; the written file is served as it is.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("switchboard.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("import")
        .arg(example().join("template.yaml"))
        .arg("--out")
        .arg(&config)
        .output()
        .expect("run switchboard import");
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "import: {report}");
    assert!(
        report.contains(&format!("create the table \"{TABLE}\"")),
        "{report}"
    );
    let imported = std::fs::read_to_string(&config).unwrap();
    for table in ["[client.tls]", "[lambda.environment]"] {
        assert!(
            !imported.lines().any(|l| l.trim() == table),
            "the import does not write {table}: the operator's part"
        );
    }

    // The operator's settings, as environment overrides.
    let tls = repo().join("tests/fixtures/tls");
    let ca = tls.join("ca.pem");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let public_host = format!("localhost:{port}");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let env: Vec<(&str, String)> = vec![
        ("SWITCHBOARD__CLIENT__LISTEN", listen),
        ("SWITCHBOARD__CLIENT__PUBLIC_HOST", public_host),
        (
            "SWITCHBOARD__CLIENT__TLS__CERT_FILE",
            path(&tls.join("cert.pem")),
        ),
        (
            "SWITCHBOARD__CLIENT__TLS__KEY_FILE",
            path(&tls.join("key.pem")),
        ),
        ("SWITCHBOARD__LAMBDA__NODE_RIC", path(&tools.node_ric)),
        ("SWITCHBOARD__LAMBDA__PYTHON", path(&tools.python)),
        (
            "SWITCHBOARD__LAMBDA__ENVIRONMENT__AWS_ENDPOINT_URL_DYNAMODB",
            moto.endpoint.clone(),
        ),
        ("SWITCHBOARD__LAMBDA__ENVIRONMENT__AWS_CA_BUNDLE", path(&ca)),
        (
            "SWITCHBOARD__LAMBDA__ENVIRONMENT__NODE_EXTRA_CA_CERTS",
            path(&ca),
        ),
        // For DynamoDB (moto takes any pair). The functions allowed ManageConnections keep
        // the management key pair the import gave them: their own environment wins.
        (
            "SWITCHBOARD__LAMBDA__ENVIRONMENT__AWS_ACCESS_KEY_ID",
            "local".into(),
        ),
        (
            "SWITCHBOARD__LAMBDA__ENVIRONMENT__AWS_SECRET_ACCESS_KEY",
            "local".into(),
        ),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gw = Gateway::start_file(&config, &env).await;
    assert_eq!(gw.client_addr.port(), port);

    // Two clients: $connect (Node, PutItem) stores each id.
    let mut alice = connect(&gw).await;
    let mut bob = connect(&gw).await;

    // whoami (Python, boto3 post_to_connection) tells each its id.
    let alice_says = whoami(&mut alice, &gw).await;
    let bob_says = whoami(&mut bob, &gw).await;
    let alice_id = alice_says["connectionId"].as_str().unwrap().to_owned();
    let bob_id = bob_says["connectionId"].as_str().unwrap().to_owned();
    assert_ne!(alice_id, bob_id);
    assert_eq!(alice_says["connected"], 2, "{alice_says}");
    let both = BTreeSet::from([alice_id.clone(), bob_id.clone()]);
    assert_eq!(stored_ids(&tools, &moto), both, "$connect stored both ids");

    // sendmessage (Node: Scan, then PostToConnectionCommand to each) reaches both.
    send(&mut alice, r#"{"action":"sendmessage","data":"hello"}"#).await;
    assert_eq!(next_text(&mut alice, &gw).await, "hello");
    assert_eq!(next_text(&mut bob, &gw).await, "hello");
    send(&mut bob, r#"{"action":"sendmessage","data":"hi alice"}"#).await;
    assert_eq!(next_text(&mut alice, &gw).await, "hi alice");
    assert_eq!(next_text(&mut bob, &gw).await, "hi alice");

    // Bob leaves: $disconnect (Python, DeleteItem) removes his id.
    bob.close(None).await.expect("close");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !matches!(
        tokio::time::timeout(Duration::from_secs(1), bob.next()).await,
        Ok(None | Some(Err(_)))
    ) {
        assert!(Instant::now() < deadline, "bob's socket did not close");
    }
    let alice_only = BTreeSet::from([alice_id.clone()]);
    wait_stored(&tools, &moto, &gw, &alice_only).await;

    // A stale id (a $disconnect that never ran): sendmessage gets GoneException for it and
    // deletes it; alice keeps chatting.
    dynamodb(
        &tools,
        &moto,
        &format!("table.put_item(Item={{'connectionId': '{bob_id}'}})"),
    );
    send(
        &mut alice,
        r#"{"action":"sendmessage","data":"still here"}"#,
    )
    .await;
    assert_eq!(next_text(&mut alice, &gw).await, "still here");
    wait_stored(&tools, &moto, &gw, &alice_only).await;
    let alone = whoami(&mut alice, &gw).await;
    assert_eq!(alone["connected"], 1, "{alone}");
    expect_silence(&mut alice, Duration::from_millis(300)).await;

    // The handlers ran without errors.
    let logs = gw.raw_logs();
    assert!(!logs.contains("lambda invocation failed"), "{logs}");
}

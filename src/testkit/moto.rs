use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::TestkitError;
use super::process::{ServerProcess, free_port, http_status, is_executable, on_path};

/// A throwaway moto server: the AWS APIs (Secrets Manager among them) in memory, on a free loopback
/// port; stopped on drop. Point an AWS SDK at [`endpoint`](Self::endpoint) with any credentials.
///
/// The binary is `CREDSWAP_MOTO`, else `moto_server` on `PATH` (PyPI's `moto[server]`).
///
/// ```no_run
/// use credswap::testkit::MotoServer;
///
/// let moto = MotoServer::start().unwrap();
/// println!("AWS_ENDPOINT_URL={}", moto.endpoint());
/// ```
#[derive(Debug)]
pub struct MotoServer {
    process: Option<ServerProcess>,
    port: u16,
    requests: PathBuf,
    _dir: tempfile::TempDir,
}

/// Where the `moto_server` binary is.
pub fn find_moto() -> Result<PathBuf, TestkitError> {
    const HINT: &str = "install moto with `pip install 'moto[server]'` (or run scripts/test, which \
                        does), or point CREDSWAP_MOTO at the `moto_server` binary";
    if let Some(path) = std::env::var_os("CREDSWAP_MOTO") {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(TestkitError::MissingBinary {
                what: "moto (CREDSWAP_MOTO is not an executable)",
                hint: HINT,
            })
        };
    }
    on_path("moto_server").ok_or(TestkitError::MissingBinary {
        what: "moto (`moto_server`)",
        hint: HINT,
    })
}

impl MotoServer {
    /// Starts the server; returns once it answers HTTP.
    pub fn start() -> Result<Self, TestkitError> {
        let binary = find_moto()?;
        let dir = tempfile::Builder::new()
            .prefix("credswap-moto-")
            .tempdir()
            .map_err(|e| TestkitError::io("create temp dir", e))?;
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            let mut command = Command::new(&binary);
            let _ = command
                .args(["-H", "127.0.0.1", "-p"])
                .arg(port.to_string())
                .current_dir(dir.path())
                .env("HOME", dir.path())
                // moto's recorder logs every request the server receives: tests count them.
                .env("MOTO_ENABLE_RECORDING", "1")
                .env("MOTO_RECORDER_FILEPATH", dir.path().join("requests.jsonl"));
            let log = dir.path().join(format!("moto-{port}.log"));
            let mut process = ServerProcess::spawn("moto", command, log)?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            match process.wait_until(Duration::from_secs(60), |_| {
                http_status(addr, "/moto-api/data.json") == Some(200)
            }) {
                Ok(()) => {
                    let requests = dir.path().join("requests.jsonl");
                    let server = MotoServer {
                        process: Some(process),
                        port,
                        requests,
                        _dir: dir,
                    };
                    server.reset_request_log();
                    return Ok(server);
                }
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or(TestkitError::Startup {
            what: "moto",
            detail: "could not start".into(),
        }))
    }

    /// The endpoint URL, `http://127.0.0.1:PORT` (for `AWS_ENDPOINT_URL`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An AWS Secrets Manager client for this server: test credentials, `us-east-1`, one attempt
    /// per call (retrying is the cache's job, and a test should see each call), and timeouts
    /// that turn a hung server into an error rather than a hung test.
    #[cfg(feature = "aws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
    pub async fn client(&self) -> aws_sdk_secretsmanager::Client {
        use aws_sdk_secretsmanager::config::{Credentials, Region};
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "static"))
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_timeout(Duration::from_secs(10))
                    .build(),
            )
            .load()
            .await;
        aws_sdk_secretsmanager::Client::new(&config)
    }

    /// Starts a server (on a blocking thread, so an async test does not stall its runtime) and
    /// returns it with a [`client`](Self::client).
    ///
    /// # Errors
    ///
    /// As for [`start`](Self::start).
    #[cfg(feature = "aws")]
    #[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
    pub async fn start_with_client() -> Result<(Self, aws_sdk_secretsmanager::Client), TestkitError>
    {
        let moto = tokio::task::spawn_blocking(MotoServer::start)
            .await
            .map_err(|error| TestkitError::Startup {
                what: "moto",
                detail: format!("the starting thread failed: {error}"),
            })??;
        let client = moto.client().await;
        Ok((moto, client))
    }

    /// How many requests for `operation` (the `X-Amz-Target` of JSON APIs, such as
    /// `secretsmanager.GetSecretValue`) the server has received since it started or since
    /// [`reset_request_log`](Self::reset_request_log).
    pub fn request_count(&self, operation: &str) -> usize {
        let log = std::fs::read_to_string(&self.requests).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|entry| {
                entry["headers"].as_object().is_some_and(|headers| {
                    headers.iter().any(|(name, value)| {
                        name.eq_ignore_ascii_case("x-amz-target")
                            && value.as_str() == Some(operation)
                    })
                })
            })
            .count()
    }

    /// Forgets the requests received so far.
    pub fn reset_request_log(&self) {
        let _ = std::fs::write(&self.requests, "");
    }

    /// Registers a rotation function named `name` (an IAM role and a Lambda function) and returns
    /// its ARN, for `RotateSecret`'s `RotationLambdaARN`.
    ///
    /// moto cannot run the function (that takes Docker), so `RotateSecret` does what AWS does
    /// before it invokes one, and no more: it stages `AWSPENDING` on the new version id (with no
    /// value, or with a copy of the current value when `RotateImmediately` is false) and returns.
    /// A test then drives the function's body itself with the four steps, as AWS would.
    pub fn rotation_function(&self, name: &str) -> Result<String, TestkitError> {
        let role = format!("credswap-rotation-{name}");
        let form = format!(
            "Action=CreateRole&Version=2010-05-08&RoleName={role}&AssumeRolePolicyDocument=%7B%7D"
        );
        let _ = self.post("iam", "/", "application/x-www-form-urlencoded", &form)?;
        let function = serde_json::json!({
            "FunctionName": name,
            "Runtime": "python3.11",
            "Role": format!("arn:aws:iam::123456789012:role/{role}"),
            "Handler": "rotation.handler",
            // A zip holding a handler that does nothing: moto only stores it.
            "Code": { "ZipFile": ROTATION_FUNCTION_ZIP },
        });
        let answer = self.post(
            "lambda",
            "/2015-03-31/functions",
            "application/json",
            &function.to_string(),
        )?;
        serde_json::from_str::<serde_json::Value>(&answer)
            .ok()
            .and_then(|created| created["FunctionArn"].as_str().map(str::to_owned))
            .ok_or_else(|| TestkitError::Cli(format!("moto did not create the function: {answer}")))
    }

    /// A request to one of moto's APIs, routed by the service its (unchecked) signature names.
    fn post(
        &self,
        service: &str,
        path: &str,
        content_type: &str,
        body: &str,
    ) -> Result<String, TestkitError> {
        use std::io::{Read, Write};
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| TestkitError::io("connect to moto", e))?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let request = format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: {content_type}\r\n\
             Authorization: AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/{service}/\
             aws4_request, SignedHeaders=host, Signature=0\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        );
        stream
            .write_all(request.as_bytes())
            .map_err(|e| TestkitError::io("send to moto", e))?;
        let mut answer = String::new();
        let _ = stream
            .read_to_string(&mut answer)
            .map_err(|e| TestkitError::io("read from moto", e))?;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("");
        if !status.starts_with('2') {
            return Err(TestkitError::Cli(format!(
                "moto answered {service} {path}: {head}"
            )));
        }
        Ok(body.to_owned())
    }

    /// Kills the server at once (its data is gone).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }
}

/// A zip file holding `rotation.py` with a handler that does nothing (base64).
const ROTATION_FUNCTION_ZIP: &str = "UEsDBBQAAAAAAHlsg12uVry6LQAAAC0AAAALAAAAcm90YXRpb24ucHlkZWYgaGFuZGxlcihldmVudCwgY29udGV4dCk6CiAgICByZXR1cm4gTm9uZQpQSwECFAMUAAAAAAB5bINdrla8ui0AAAAtAAAACwAAAAAAAAAAAAAAgAEAAAAAcm90YXRpb24ucHlQSwUGAAAAAAEAAQA5AAAAVgAAAAAA";

//! The real `pyrogate` binary: one-shot commands run to completion ([`pyrogate`]), and servers
//! left running on 127.0.0.1:0 ([`Server`]). Both start from an empty environment (plus what
//! the test passes), so the host's `PYROSCOPE_*` variables can't leak in.

use std::io::{BufRead as _, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::http::Http;
use super::wait::Deadline;

#[derive(Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails(self) -> Self {
        assert!(
            self.code.is_some_and(|c| c != 0),
            "expected failure; code {:?}\nstdout: {}\nstderr: {}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// The `pyrogate` binary with an empty environment (plus `env`), every stream piped.
pub fn pyrogate_command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_pyrogate"));
    cmd.args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs the binary to completion, feeding `stdin`.
pub fn pyrogate(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = pyrogate_command(args, env).spawn().expect("spawn pyrogate");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin.as_bytes()).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("wait for pyrogate");
    Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// [`pyrogate`] off the async runtime's worker threads.
pub async fn pyrogate_async(args: &[&str], env: &[(&str, &str)], stdin: &str) -> Output {
    let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let stdin = stdin.to_owned();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        pyrogate(&args, &env, &stdin)
    })
    .await
    .expect("pyrogate task")
}

/// A running `pyrogate` server process (`server` or `ingest`). Its stdout and stderr are
/// collected line by line into one log. Dropping it kills it, so no test leaves one behind.
pub struct Server {
    pub name: String,
    pub url: String,
    child: Child,
    log: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Starts `pyrogate <args> --api-bind-addr 127.0.0.1:0` with `env`, and waits (bounded) for
    /// the address it logs when listening — no port is guessed, so none can be taken meanwhile
    /// — and for it to answer `/healthz`.
    pub async fn start(name: &str, args: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_command(name, pyrogate_command(args, env)).await
    }

    /// [`Server::start`] with an open-files limit of `nofile` (soft and hard): util-linux's
    /// `prlimit` sets it on itself and then executes the binary.
    pub async fn start_with_open_files(
        name: &str,
        nofile: u64,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let prlimit = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("prlimit"))
            .find(|path| path.is_file())
            .expect("prlimit (util-linux) on PATH");
        let mut cmd = Command::new(prlimit);
        cmd.arg(format!("--nofile={nofile}:{nofile}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_pyrogate"))
            .args(args)
            .env_clear()
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Server::start_command(name, cmd).await
    }

    /// Runs `cmd` (the binary, its arguments and environment) as [`Server::start`] does.
    async fn start_command(name: &str, mut cmd: Command) -> Server {
        cmd.args(["--api-bind-addr", "127.0.0.1:0"])
            .stdin(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let readers = vec![collect(stdout, log.clone()), collect(stderr, log.clone())];
        let mut server = Server {
            name: name.to_owned(),
            url: String::new(),
            child,
            log,
            readers,
        };
        let deadline = Deadline::secs(30, format!("{name} to listen"));
        loop {
            if let Some(addr) = server.listening_addr() {
                server.url = format!("http://{addr}");
                break;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{name} exited ({status}):\n{}", server.log());
            }
            deadline.tick(|| server.log()).await;
        }
        // Answering, not just bound.
        let http = server.client();
        let deadline = Deadline::secs(10, format!("{name} to answer /healthz"));
        loop {
            if http.get("/healthz").send().await.status == 200 {
                return server;
            }
            deadline.tick(|| server.log()).await;
        }
    }

    /// A client for this server, with a cookie jar.
    pub fn client(&self) -> Http {
        Http::new(&self.url).with_jar()
    }

    /// The process id, to read its `/proc/<pid>/` entries (memory in the soak).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it wrote so far, stdout and stderr interleaved by line.
    pub fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }

    /// The `addr=` of the "listening" log line.
    fn listening_addr(&self) -> Option<String> {
        let log = self.log();
        let line = log.lines().find(|l| l.contains("listening"))?;
        let addr = line.split("addr=").nth(1)?.split_whitespace().next()?;
        Some(addr.trim_matches('"').to_owned())
    }

    /// SIGTERM, then waits (bounded) for the exit and for its output to close (a timeout fails
    /// the test, and the drop kills the process).
    pub async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        let deadline = Deadline::secs(20, format!("{} to exit after SIGTERM", self.name));
        let status = loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                break status;
            }
            deadline.tick(|| self.log()).await;
        };
        // The reader threads end at EOF, which the exit has caused.
        let deadline = Deadline::secs(5, format!("{}'s output to close", self.name));
        while self.readers.iter().any(|r| !r.is_finished()) {
            deadline.tick(|| self.log()).await;
        }
        status
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A thread appending each line of `stream` to `log`, until EOF.
fn collect(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut log = log.lock().expect("log");
            log.push_str(&line);
            log.push('\n');
        }
    })
}

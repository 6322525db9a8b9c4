//! `export --from URL --what log`: pulls the portable log archive from a running server's
//! admin API (`GET /admin/log`) over plain HTTP/1.1, writes it, then checks it end to end (the
//! trailer and every record's checksum and chain) before reporting success.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use subledger_audit::{AuditError, Silent, Source};

/// Longest accepted response header section, in bytes.
const RESPONSE_HEADER_BYTES_MAX: usize = 64 * 1024;
/// Longest wait for the server to send anything.
const READ_TIMEOUT_SECONDS: u64 = 300;

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn admin_token(file: Option<&Path>) -> Result<String, String> {
    let token = match file {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|error| format!("{}: {error}", path.display()))?
        }
        None => std::env::var("SUBLEDGER_ADMIN_TOKEN").map_err(|_| {
            "--from needs the admin token: --admin-token-file or SUBLEDGER_ADMIN_TOKEN".to_string()
        })?,
    };
    Ok(token.trim().to_string())
}

/// `http://host:port[/prefix]` → (host:port, prefix).
fn split_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported here"))?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let authority = if authority.contains(':') {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.trim_end_matches('/').to_string()))
}

pub fn export_log(url: &str, token_file: Option<&Path>, out: Option<&Path>) -> ExitCode {
    let token = match admin_token(token_file) {
        Ok(token) => token,
        Err(error) => return fail(error),
    };
    let Some(out) = out else {
        return fail("--from writes a file: give --out FILE");
    };
    match fetch(url, &token, out) {
        Ok(bytes) => match Source::Archive(PathBuf::from(out))
            .open()
            .and_then(|opened| subledger_audit::verify(&opened, &Silent))
        {
            Ok(report) if report.problem.is_none() => {
                eprintln!(
                    "exported {bytes} bytes: {} events, head {} {}",
                    report.events, report.head, report.head_hash
                );
                ExitCode::SUCCESS
            }
            Ok(report) => {
                eprintln!(
                    "error: the archive received does not verify: {:?}",
                    report.problem
                );
                ExitCode::from(1)
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::from(if matches!(error, AuditError::Problem { .. }) {
                    1
                } else {
                    2
                })
            }
        },
        Err(error) => fail(error),
    }
}

fn fetch(url: &str, token: &str, out: &Path) -> Result<u64, String> {
    let (authority, prefix) = split_url(url)?;
    let stream = TcpStream::connect(&authority).map_err(|error| format!("{authority}: {error}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(READ_TIMEOUT_SECONDS)))
        .map_err(|error| error.to_string())?;
    let mut writer = stream.try_clone().map_err(|error| error.to_string())?;
    write!(
        writer,
        "GET {prefix}/admin/log HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|error| error.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader
        .read_line(&mut status)
        .map_err(|error| error.to_string())?;
    let mut chunked = false;
    let mut header_bytes = status.len();
    loop {
        let mut line = String::new();
        let read = reader
            .read_line(&mut line)
            .map_err(|error| error.to_string())?;
        header_bytes += read;
        if read == 0 || header_bytes > RESPONSE_HEADER_BYTES_MAX {
            return Err("the server's response headers are incomplete or too long".into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
    }
    if status.split_whitespace().nth(1) != Some("200") {
        let mut body = String::new();
        let _ = reader.take(4096).read_to_string(&mut body);
        return Err(format!(
            "the server answered {}: {}",
            status.trim(),
            body.trim()
        ));
    }
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(out).map_err(|error| format!("{}: {error}", out.display()))?,
    );
    let written = if chunked {
        copy_chunked(&mut reader, &mut file)?
    } else {
        std::io::copy(&mut reader, &mut file).map_err(|error| error.to_string())?
    };
    file.flush().map_err(|error| error.to_string())?;
    Ok(written)
}

/// Decodes an HTTP/1.1 chunked body into `out`.
fn copy_chunked(reader: &mut impl BufRead, out: &mut impl Write) -> Result<u64, String> {
    let mut total = 0_u64;
    loop {
        let mut size_line = String::new();
        if reader
            .read_line(&mut size_line)
            .map_err(|error| error.to_string())?
            == 0
        {
            return Err("the response ended in the middle of the archive".into());
        }
        let size_text = size_line.trim().split(';').next().unwrap_or_default();
        let size = u64::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            return Ok(total);
        }
        let copied =
            std::io::copy(&mut reader.take(size), out).map_err(|error| error.to_string())?;
        if copied != size {
            return Err("the response ended in the middle of a chunk".into());
        }
        total += size;
        let mut end = String::new();
        reader
            .read_line(&mut end)
            .map_err(|error| error.to_string())?;
    }
}

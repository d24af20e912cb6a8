//! `login` / `logout`: credentials in docker's config.json (see [`crate::dockercfg`]). They
//! are stored, not checked against the registry (the CRI has no call for that); the next pull
//! from that registry uses them, and fails with the registry's answer if they are wrong.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};

use crate::{dockercfg, LoginArgs};

/// One line from stdin (the trailing newline removed).
fn read_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_owned())
}

/// Asks for the password on the terminal without echoing it.
fn prompt_password() -> Result<String> {
    use nix::sys::termios::{self, LocalFlags, SetArg};
    use std::os::fd::AsFd;
    eprint!("Password: ");
    std::io::stderr().flush()?;
    let stdin = std::io::stdin();
    let saved = termios::tcgetattr(stdin.as_fd()).context("read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &quiet)?;
    let line = read_line();
    let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &saved);
    eprintln!();
    line
}

pub fn login(args: &LoginArgs) -> Result<()> {
    let user = match &args.username {
        Some(u) => u.clone(),
        None if std::io::stdin().is_terminal() && !args.password_stdin => {
            eprint!("Username: ");
            std::io::stderr().flush()?;
            read_line()?
        }
        None => bail!("login: --username is needed"),
    };
    let password = match (&args.password, args.password_stdin) {
        (Some(_), true) => bail!("login: --password and --password-stdin are exclusive"),
        (Some(p), false) => {
            eprintln!("WARNING! --password on the command line is visible to other users; use --password-stdin");
            p.clone()
        }
        (None, true) => read_line()?,
        (None, false) if std::io::stdin().is_terminal() => prompt_password()?,
        (None, false) => bail!("login: no password: use --password-stdin"),
    };
    let path = dockercfg::store(&args.server, &user, &password)?;
    println!(
        "Login stored for {} in {} (used by the next pull; not checked now)",
        args.server,
        path.display()
    );
    Ok(())
}

pub fn logout(server: &str) -> Result<()> {
    if dockercfg::remove(server)? {
        println!("Removed login credentials for {server}");
    } else {
        println!("Not logged in to {server}");
    }
    Ok(())
}

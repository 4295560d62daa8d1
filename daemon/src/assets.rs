//! Shell completions (bash, zsh, fish) and man pages generated from a daemon's own clap
//! definition, for packaging: `satcast-uplink generate-assets --out DIR` writes them, and
//! packaging/build-debs.sh puts them into the .deb packages.

use std::path::Path;

use clap_complete::Shell;

/// Writes into `out` (created if missing): `completions/<name>.bash`, `completions/_<name>`
/// (zsh), `completions/<name>.fish`, and `man/<name>.1` with one page per subcommand
/// (`<name>-<sub>.1`, `<name>-<sub>-<subsub>.1`), hidden ones left out.
pub fn write(mut command: clap::Command, out: &Path) -> std::io::Result<()> {
    let name = command.get_name().to_owned();
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for (shell, file) in [(Shell::Bash, format!("{name}.bash")), (Shell::Zsh, format!("_{name}")), (Shell::Fish, format!("{name}.fish"))] {
        let mut bytes = Vec::new();
        clap_complete::generate(shell, &mut command, name.clone(), &mut bytes);
        std::fs::write(completions.join(file), bytes)?;
    }
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    // Building names every subcommand for its page: "satcast-uplink-keys-init".
    command.build();
    write_man(&command, &man)
}

fn write_man(command: &clap::Command, dir: &Path) -> std::io::Result<()> {
    let page = command.get_display_name().unwrap_or(command.get_name());
    let mut bytes = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut bytes)?;
    std::fs::write(dir.join(format!("{page}.1")), bytes)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
        write_man(sub, dir)?;
    }
    Ok(())
}

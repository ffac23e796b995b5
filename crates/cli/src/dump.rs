//! `homa dump`: decode the Homa packets of a pcap/pcapng capture, or one packet given in
//! hex, as text lines (like tcpdump) or JSON lines. The decoding is the `homa-dump`
//! library's; this module reads the arguments and the input, and prints.

use std::fs::File;
use std::io::{self, BufRead, BufWriter, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use homa_dump::{decode_packet, parse_hex, DumpError, DumpOptions, HexError, Record, Records};
use homa_wire::HOMA_MAX_MESSAGE_LENGTH;

/// Command-line arguments of `homa dump`.
#[derive(Debug, Clone, clap::Args)]
#[command(
    about = "Decode the Homa packets in a pcap or pcapng file, or one packet given in hex",
    after_help = "Exit status: 0 on success, 1 if the file cannot be read (or the --hex \
                  packet does not decode), 2 for bad arguments or bad hex."
)]
pub struct DumpArgs {
    /// The pcap or pcapng file to read ("-", or none with standard input not a terminal:
    /// standard input, as in `tcpdump -w - | homa dump`). A short snap length is fine (`tcpdump -s 128`
    /// keeps every Homa header over IPv4, `-s 160` over IPv6, but only the first of a
    /// coalesced GSO datagram's): a packet cut after its header is decoded, its line
    /// ending in `captured=N/M` (N of its M Homa bytes kept).
    #[arg(value_name = "FILE", conflicts_with = "hex")]
    pub file: Option<PathBuf>,

    /// Decode one packet given as hex bytes, Homa header onward; "-" reads the hex from
    /// standard input. Accepted: hex digits with spaces, newlines and 0x prefixes (`xxd
    /// -p`), and the output of `xxd`, `hexdump -C` and `od -tx1` (offsets checked and
    /// dropped, ASCII columns and `*` repeats understood) or lines like Wireshark's
    /// `0010  30 e4 b9 7d` without an ASCII column. Not `hexdump` without -C nor `od -x`:
    /// their 16-bit words are in the machine's byte order.
    #[arg(long, value_name = "HEX")]
    pub hex: Option<String>,

    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,

    /// Also decode UDP datagrams from or to this port as Homa (the UDP payload is the
    /// Homa packet, or several back to back when a GSO send was captured before
    /// segmentation: each gets its own line, marked gso=i/n).
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub udp_port: Option<u16>,

    /// Largest DATA message_length accepted; longer messages give an error line.
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = HOMA_MAX_MESSAGE_LENGTH,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_message_length: u32,
}

/// Run `homa dump`: print to stdout, report problems on stderr, return the exit status.
pub fn run(args: &DumpArgs) -> ExitCode {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let result = dump(args, &mut out).and_then(|status| {
        out.flush().map_err(Failure::Output)?;
        Ok(status)
    });
    match result {
        Ok(status) => status,
        // The reader went away (`homa dump x | head`): stop quietly, as tcpdump does.
        Err(Failure::Output(e)) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(Failure::Output(e)) => {
            eprintln!("homa dump: writing the output failed: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Dump(e)) => {
            // Lines decoded before the error are worth keeping.
            let _ = out.flush();
            eprintln!("homa dump: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Stdin(e)) => {
            eprintln!("homa dump: reading standard input failed: {e}");
            ExitCode::FAILURE
        }
        Err(Failure::Hex(e)) => {
            eprintln!("homa dump: bad --hex argument: {e}");
            ExitCode::from(2)
        }
        Err(Failure::NoInput) => {
            eprintln!(
                "homa dump: give a capture FILE (\"-\" for standard input) or --hex, or pipe \
                 a capture in: standard input is a terminal or empty"
            );
            ExitCode::from(2)
        }
    }
}

/// Why `homa dump` stopped.
enum Failure {
    /// The capture could not be read: exit status 1.
    Dump(DumpError),
    /// Standard input could not be read (`--hex -`, or the capture): exit status 1.
    Stdin(io::Error),
    /// The `--hex` argument is not hex: exit status 2.
    Hex(HexError),
    /// Writing the output failed.
    Output(io::Error),
    /// No FILE, no --hex, and standard input is a terminal or empty: exit status 2.
    NoInput,
}

impl From<DumpError> for Failure {
    fn from(e: DumpError) -> Self {
        Failure::Dump(e)
    }
}

fn dump(args: &DumpArgs, out: &mut impl Write) -> Result<ExitCode, Failure> {
    let opts = DumpOptions {
        udp_port: args.udp_port,
        max_message_length: args.max_message_length,
    };
    let write = |out: &mut dyn Write, r: &Record| {
        if args.json {
            r.write_json(out)
        } else {
            writeln!(out, "{}", r.to_text())
        }
    };

    if let Some(hex) = &args.hex {
        let text = if hex == "-" {
            let mut s = String::new();
            io::stdin().read_to_string(&mut s).map_err(Failure::Stdin)?;
            s
        } else {
            hex.clone()
        };
        let bytes = parse_hex(&text).map_err(Failure::Hex)?;
        let record = decode_packet(&bytes, opts.max_message_length);
        write(out, &record).map_err(Failure::Output)?;
        // Scripts can tell from the status whether the bytes were a valid packet.
        return Ok(if record.outcome.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    // No FILE: standard input, unless it is a terminal (nobody types a capture).
    let stdin = PathBuf::from("-");
    let path = match &args.file {
        Some(path) => path,
        None if io::stdin().is_terminal() => return Err(Failure::NoInput),
        None => &stdin,
    };
    let capture_err = |source| DumpError::Capture {
        path: path.clone(),
        source,
    };
    // "-" reads the capture from standard input (`tcpdump -w - | homa dump -`).
    let input: Box<dyn Read> = if path.as_os_str() == "-" {
        let mut stdin = io::stdin().lock();
        // No FILE and nothing piped in (`homa dump < /dev/null`): a usage error, as
        // when standard input is a terminal.
        if args.file.is_none() && stdin.fill_buf().map_err(Failure::Stdin)?.is_empty() {
            return Err(Failure::NoInput);
        }
        Box::new(stdin)
    } else {
        Box::new(File::open(path).map_err(|source| DumpError::Open {
            path: path.clone(),
            source,
        })?)
    };
    // A capture piped in live (`tcpdump -U -w - | homa dump`) may pause for long between
    // packets: each one's line goes out at once, not when the output buffer fills.
    let live = path.as_os_str() == "-" && !stdin_is_file();
    let mut records = Records::new(input, opts).map_err(capture_err)?;
    let mut failure = None;
    for record in records.by_ref() {
        match record {
            Ok(r) => {
                write(out, &r).map_err(Failure::Output)?;
                if live {
                    out.flush().map_err(Failure::Output)?;
                }
            }
            Err(e) => failure = Some(capture_err(e)),
        }
    }
    if let Some(summary) = records.stats().summary() {
        out.flush().map_err(Failure::Output)?;
        eprintln!("homa dump: {summary}");
    }
    let stats = records.stats();
    if stats.frames == 0 && failure.is_none() {
        eprintln!("homa dump: the capture holds no frames");
    }
    if stats.homa == 0 && stats.other > 0 {
        match opts.udp_port {
            None => eprintln!(
                "homa dump: no Homa packets (IP protocol 146) in {} frames. Homa's default UDP \
                 mode carries them in UDP datagrams: add --udp-port PORT (the server's port).",
                stats.frames
            ),
            Some(port) => eprintln!(
                "homa dump: no Homa packets (IP protocol 146, or UDP from or to port {port}) \
                 in {} frames: is {port} the port of the Homa server (its UDP port is its \
                 Homa port)?",
                stats.frames
            ),
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Whether standard input is a regular file (`homa dump < x.pcap`), which is read as
/// fast as it decodes, rather than a pipe or a terminal.
fn stdin_is_file() -> bool {
    use std::os::fd::AsFd;
    io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map(File::from)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file())
}

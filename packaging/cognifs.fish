# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_cognifs_global_optspecs
    string join \n config= profile= h/help V/version
end

function __fish_cognifs_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_cognifs_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_cognifs_using_subcommand
    set -l cmd (__fish_cognifs_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c cognifs -n "__fish_cognifs_needs_command" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_needs_command" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_needs_command" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_needs_command" -s V -l version -d 'Print version'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "login" -d 'Sign in through the hosted sign-in page (authorization code + PKCE)'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "logout" -d 'Revoke the sign-in and delete the stored tokens'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "status" -d 'Who is signed in, where the data lives, and the running mounts (live figures)'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "mount" -d 'Mount the profile\'s prefix at DIR (default: the profile\'s mount_point, else ~/cloud)'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "unmount" -d 'Unmount DIR and wait for its cognifs process to exit'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "config" -d 'Read or import configuration'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "service" -d 'Run the mount as a systemd user service'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "mount-helper" -d 'mount(8) helper: `SOURCE DIR [-o OPTIONS]`, SOURCE being `cognifs#PROFILE` or PROFILE (what /sbin/mount.fuse.cognifs, a symlink to cognifs, runs for an fstab line)'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "pending" -d 'Uploads that failed and are kept on disk until they are in S3'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "offline" -d 'Files kept on this disk for when S3 is away (`pin`, `unpin`, `list`)'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "conflicts" -d 'Saves that lost a race with another device or client (kept as conflict copies)'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "man" -d 'Print the man page (roff) to stdout'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "demo" -d 'Start a local Cognito + S3 stand-in, sign a demo user in, and mount at DIR'
complete -c cognifs -n "__fish_cognifs_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand login" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand login" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand login" -l no-browser -d 'Print the URL and read back the address the browser was sent to'
complete -c cognifs -n "__fish_cognifs_using_subcommand login" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand logout" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand logout" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand logout" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand status" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand status" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand status" -l json -d 'Print one JSON object (the fields are documented in the README)'
complete -c cognifs -n "__fish_cognifs_using_subcommand status" -l watch -d 'Refresh every second until Ctrl-C (with --json: one object per line)'
complete -c cognifs -n "__fish_cognifs_using_subcommand status" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l cache-size -d 'Disk cache budget, e.g. 2GiB: file data kept across mounts and for offline use, under $XDG_CACHE_HOME/cognifs/PROFILE/blocks (default: 5% of that disk, at most 10GiB). Memory holds only a small hot set' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l block-size -d 'Read block size, e.g. 1MiB' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l max-readahead -d 'Largest readahead window of a sequential reader' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l part-size -d 'Multipart upload part size (at least 5MiB)' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l cache-dir -d 'Where files being written are spooled (default: $XDG_CACHE_HOME/cognifs/spool)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l pending-max -d 'Most data kept for uploads that failed, counting every file open for writing (which may have to be kept); past it, writes fail with ENOSPC (default: no limit but --min-free)' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l min-free -d 'Free space kept on the disk holding failed uploads; writes that could eat into it fail with ENOSPC (default: 5% of that disk, at most 1GiB)' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l stray-upload-hours -d 'Hours after which a multipart upload under the prefix counts as abandoned and is aborted at mount, whoever started it (this machine\'s own dead ones go at once)' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l metadata-ttl -d 'Seconds that attributes and listings are trusted' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l shutdown-grace -d 'Seconds a stop (SIGTERM, Ctrl-C, an outside lazy unmount) waits for files still open for writing to be closed; then they are uploaded as they stand. Keep it below the service\'s TimeoutStopSec (120)' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l uid -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l gid -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l file-mode -d 'Mode of files, octal' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l dir-mode -d 'Mode of directories, octal' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l metrics-addr -d 'Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9464 (a non-loopback address is served too, with a warning)' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -s f -l foreground -d 'Stay in the foreground (logs also to stderr)'
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l read-only
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l allow-other -d 'Let other users see the mount (needs user_allow_other in /etc/fuse.conf)'
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l list-only -d 'Attributes from listings alone, never a HEAD: Last-Modified as mtime, --uid/--gid and --file-mode/--dir-mode for everything, symlinks and special files shown as files (like rclone\'s --use-server-modtime). Fastest `ls -l` for buckets where stored attributes do not matter'
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l conflict-error -d 'A close or fsync whose data went beside the object as a conflict copy (another device changed the file meanwhile) fails with ESTALE; the data is in S3 all the same. By default such a close returns 0'
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -l offline-strict -d 'While S3 does not answer, close and fsync fail (EIO; the data is kept and uploaded all the same) and mkdir, unlink and the like are refused, as before offline mode. By default they succeed once the change is safe on this disk, and S3 gets it when it answers again'
complete -c cognifs -n "__fish_cognifs_using_subcommand mount" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand unmount" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand unmount" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand unmount" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and not __fish_seen_subcommand_from show import help" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and not __fish_seen_subcommand_from show import help" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and not __fish_seen_subcommand_from show import help" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and not __fish_seen_subcommand_from show import help" -f -a "show" -d 'The resolved profile and where each value came from'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and not __fish_seen_subcommand_from show import help" -f -a "import" -d 'Write a profile from a web app\'s .env (VITE_APP_*, REACT_APP_* or bare names)'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and not __fish_seen_subcommand_from show import help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from show" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from show" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from show" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from import" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from import" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from import" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "show" -d 'The resolved profile and where each value came from'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "import" -d 'Write a profile from a web app\'s .env (VITE_APP_*, REACT_APP_* or bare names)'
complete -c cognifs -n "__fish_cognifs_using_subcommand config; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and not __fish_seen_subcommand_from install help" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and not __fish_seen_subcommand_from install help" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and not __fish_seen_subcommand_from install help" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and not __fish_seen_subcommand_from install help" -f -a "install" -d 'Write ~/.config/systemd/user/cognifs@.service and enable cognifs@PROFILE'
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and not __fish_seen_subcommand_from install help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and __fish_seen_subcommand_from install" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and __fish_seen_subcommand_from install" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and __fish_seen_subcommand_from install" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "install" -d 'Write ~/.config/systemd/user/cognifs@.service and enable cognifs@PROFILE'
complete -c cognifs -n "__fish_cognifs_using_subcommand service; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand mount-helper" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand mount-helper" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand mount-helper" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and not __fish_seen_subcommand_from list drop help" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and not __fish_seen_subcommand_from list drop help" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and not __fish_seen_subcommand_from list drop help" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and not __fish_seen_subcommand_from list drop help" -f -a "list" -d 'List them (also shown by `cognifs status`)'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and not __fish_seen_subcommand_from list drop help" -f -a "drop" -d 'Abandon one for good: its data is deleted, S3 keeps what it has'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and not __fish_seen_subcommand_from list drop help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from list" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from list" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from drop" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from drop" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from drop" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from help" -f -a "list" -d 'List them (also shown by `cognifs status`)'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from help" -f -a "drop" -d 'Abandon one for good: its data is deleted, S3 keeps what it has'
complete -c cognifs -n "__fish_cognifs_using_subcommand pending; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and not __fish_seen_subcommand_from pin unpin list help" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and not __fish_seen_subcommand_from pin unpin list help" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and not __fish_seen_subcommand_from pin unpin list help" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and not __fish_seen_subcommand_from pin unpin list help" -f -a "pin" -d 'Fetch files or whole trees into the disk cache and keep them there (never evicted), so they can be read while S3 is away'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and not __fish_seen_subcommand_from pin unpin list help" -f -a "unpin" -d 'Let pinned files be evicted again'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and not __fish_seen_subcommand_from pin unpin list help" -f -a "list" -d 'What each running mount keeps pinned, and how much room it takes'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and not __fish_seen_subcommand_from pin unpin list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from pin" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from pin" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from pin" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from unpin" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from unpin" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from unpin" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from list" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from list" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from help" -f -a "pin" -d 'Fetch files or whole trees into the disk cache and keep them there (never evicted), so they can be read while S3 is away'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from help" -f -a "unpin" -d 'Let pinned files be evicted again'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from help" -f -a "list" -d 'What each running mount keeps pinned, and how much room it takes'
complete -c cognifs -n "__fish_cognifs_using_subcommand offline; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and not __fish_seen_subcommand_from list help" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and not __fish_seen_subcommand_from list help" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and not __fish_seen_subcommand_from list help" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and not __fish_seen_subcommand_from list help" -f -a "list" -d 'Each write a running mount lost to another client, and where its version went'
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and not __fish_seen_subcommand_from list help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and __fish_seen_subcommand_from list" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and __fish_seen_subcommand_from list" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and __fish_seen_subcommand_from list" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and __fish_seen_subcommand_from help" -f -a "list" -d 'Each write a running mount lost to another client, and where its version went'
complete -c cognifs -n "__fish_cognifs_using_subcommand conflicts; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand completions" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand completions" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand completions" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand man" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand man" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand man" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand demo" -l config -d 'Config file (default: $COGNIFS_CONFIG, else $XDG_CONFIG_HOME/cognifs/config.toml)' -r -F
complete -c cognifs -n "__fish_cognifs_using_subcommand demo" -l profile -d 'Profile (table) of the config file (default: $COGNIFS_PROFILE, else "default")' -r
complete -c cognifs -n "__fish_cognifs_using_subcommand demo" -s h -l help -d 'Print help'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "login" -d 'Sign in through the hosted sign-in page (authorization code + PKCE)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "logout" -d 'Revoke the sign-in and delete the stored tokens'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "status" -d 'Who is signed in, where the data lives, and the running mounts (live figures)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "mount" -d 'Mount the profile\'s prefix at DIR (default: the profile\'s mount_point, else ~/cloud)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "unmount" -d 'Unmount DIR and wait for its cognifs process to exit'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "config" -d 'Read or import configuration'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "service" -d 'Run the mount as a systemd user service'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "mount-helper" -d 'mount(8) helper: `SOURCE DIR [-o OPTIONS]`, SOURCE being `cognifs#PROFILE` or PROFILE (what /sbin/mount.fuse.cognifs, a symlink to cognifs, runs for an fstab line)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "pending" -d 'Uploads that failed and are kept on disk until they are in S3'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "offline" -d 'Files kept on this disk for when S3 is away (`pin`, `unpin`, `list`)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "conflicts" -d 'Saves that lost a race with another device or client (kept as conflict copies)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "completions" -d 'Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "man" -d 'Print the man page (roff) to stdout'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "demo" -d 'Start a local Cognito + S3 stand-in, sign a demo user in, and mount at DIR'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and not __fish_seen_subcommand_from login logout status mount unmount config service mount-helper pending offline conflicts completions man demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "show" -d 'The resolved profile and where each value came from'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from config" -f -a "import" -d 'Write a profile from a web app\'s .env (VITE_APP_*, REACT_APP_* or bare names)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from service" -f -a "install" -d 'Write ~/.config/systemd/user/cognifs@.service and enable cognifs@PROFILE'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from pending" -f -a "list" -d 'List them (also shown by `cognifs status`)'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from pending" -f -a "drop" -d 'Abandon one for good: its data is deleted, S3 keeps what it has'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from offline" -f -a "pin" -d 'Fetch files or whole trees into the disk cache and keep them there (never evicted), so they can be read while S3 is away'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from offline" -f -a "unpin" -d 'Let pinned files be evicted again'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from offline" -f -a "list" -d 'What each running mount keeps pinned, and how much room it takes'
complete -c cognifs -n "__fish_cognifs_using_subcommand help; and __fish_seen_subcommand_from conflicts" -f -a "list" -d 'Each write a running mount lost to another client, and where its version went'

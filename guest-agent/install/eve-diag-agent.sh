#!/bin/sh
# eve-diag-agent.sh: the eve-diag guest agent for images without Node (POSIX sh; busybox, dash, bash).
#
#   eve-diag-agent.sh mark [--root DIR] [--console PATH|none] [--no-syslog] [--seq-file FILE]
#       Writes one mark line, the same line the Node agent writes, to syslog (logger; without
#       logger: /dev/kmsg) and to the console. Run it from cron (see eve-diag.cron).
#   eve-diag-agent.sh heartbeat [--root DIR] [--zone PATH] [--period S] [--zone-retry S]
#       Reads the agent thermal zone's temp every period, forever (the agent heartbeat of the
#       eve-diag SSDT). Run it under a supervisor (systemd unit, OpenRC or sysvinit script).
#   eve-diag-agent.sh --version
#
# Mark line: eve-diag mark seq=N uptime=<s> load=<1-min> mem_avail=<kB>kB agent=VERSION-sh
# (checks are a Node agent feature). seq is kept in --seq-file (default /run/eve-diag/mark.seq), so
# it counts marks since boot. EVE_DIAG_KMSG replaces /dev/kmsg (tests).

VERSION=0.1.0
TAG=eve-diag-agent
PROG=${0##*/}

say() { printf '%s: %s\n' "$PROG" "$*" >&2; }
usage() {
	say "usage: $PROG mark [--root DIR] [--console PATH|none] [--no-syslog] [--seq-file FILE]"
	say "       $PROG heartbeat [--root DIR] [--zone PATH] [--period S] [--zone-retry S]"
	exit 2
}

# num VALUE: sets $num to VALUE when it is a plain unsigned decimal of at most 24 chars, else '?'.
num() {
	num=$1
	case $num in
		'' | *[!0-9.]* | .* | *. | *.*.*) num='?' ;;
		*) [ "${#num}" -le 24 ] || num='?' ;;
	esac
}

# first_field FILE: sets $field to the first field of the first line of FILE ('' when unreadable).
first_field() {
	field=
	{ IFS=' 	' read -r field _ < "$1" || [ -n "$field" ]; } 2>/dev/null || field=
}

mark_line() {
	first_field "$root/proc/uptime"; num "$field"; up=$num
	first_field "$root/proc/loadavg"; num "$field"; load=$num
	mem='?'
	if [ -r "$root/proc/meminfo" ]; then
		while IFS=' 	' read -r k v _ || [ -n "$k" ]; do
			if [ "$k" = MemAvailable: ]; then
				num "$v"
				case $num in *.* | '?') mem='?' ;; *) mem=${num}kB ;; esac
				break
			fi
		done < "$root/proc/meminfo"
	fi
	line="eve-diag mark seq=$seq uptime=$up load=$load mem_avail=$mem agent=$VERSION-sh"
}

do_mark() {
	root= console=/dev/console syslog=1 seq_file=/run/eve-diag/mark.seq
	while [ $# -gt 0 ]; do
		case $1 in
			--root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
			--console) [ $# -ge 2 ] || usage; console=$2; shift 2 ;;
			--no-syslog) syslog=0; shift ;;
			--seq-file) [ $# -ge 2 ] || usage; seq_file=$2; shift 2 ;;
			*) say "mark: unknown option '$1'"; usage ;;
		esac
	done
	seq=0
	{ read -r seq < "$seq_file"; } 2>/dev/null
	case $seq in '' | *[!0-9]*) seq=0 ;; esac
	seq=$((seq + 1))
	mkdir -p "${seq_file%/*}" 2>/dev/null
	# 2> first: redirections apply left to right, so a failed open is silenced too.
	echo "$seq" 2>/dev/null > "$seq_file"
	mark_line
	if [ "$syslog" = 1 ]; then
		if command -v logger > /dev/null 2>&1; then
			logger -t "$TAG" -p user.info "$line"
		else
			# No logger: the kernel log (<14> = user.info), which syslog daemons import.
			kmsg=${EVE_DIAG_KMSG:-/dev/kmsg}
			[ -e "$kmsg" ] && printf '<14>%s: %s\n' "$TAG" "$line" 2>/dev/null >> "$kmsg"
		fi
	fi
	if [ "$console" != none ] && [ -e "$console" ]; then
		printf '%s\n' "$line" 2>/dev/null >> "$console"
	fi
	return 0
}

# find_zone: sets $temp to the temp file of the thermal zone whose device/path is $zone.
find_zone() {
	temp=
	for z in "$root"/sys/class/thermal/thermal_zone*; do
		p=
		{ read -r p < "$z/device/path"; } 2>/dev/null || continue
		if [ "$p" = "$zone" ]; then
			temp=$z/temp
			return 0
		fi
	done
	return 1
}

do_heartbeat() {
	root= zone='\_TZ_.EDGA' period=1 retry=30 temp=
	while [ $# -gt 0 ]; do
		case $1 in
			--root) [ $# -ge 2 ] || usage; root=$2; shift 2 ;;
			--zone) [ $# -ge 2 ] || usage; zone=$2; shift 2 ;;
			--period) [ $# -ge 2 ] || usage; period=$2; shift 2 ;;
			--zone-retry) [ $# -ge 2 ] || usage; retry=$2; shift 2 ;;
			*) say "heartbeat: unknown option '$1'"; usage ;;
		esac
	done
	num "$period"; [ "$num" != '?' ] || { say "heartbeat: --period: seconds, e.g. 1 or 0.5 (got '$period')"; exit 2; }
	num "$retry"; [ "$num" != '?' ] || { say "heartbeat: --zone-retry: seconds (got '$retry')"; exit 2; }
	trap 'exit 0' TERM INT
	state=start
	while :; do
		if [ -z "$temp" ] && ! find_zone; then
			# Say it once, keep looking.
			[ "$state" = missing ] || say "heartbeat paused: no thermal zone $zone under $root/sys/class/thermal (is the eve-diag SSDT loaded? thermal.off=1?); looking again every $retry s"
			state=missing
			sleep "$retry" & wait $!
			continue
		fi
		# `read` is a shell builtin: no process per beat. Each open+read of temp runs _TMP once.
		if { read -r _t < "$temp"; } 2>/dev/null; then
			[ "$state" = ok ] || say "heartbeat: reading $temp ($zone)"
			state=ok
			sleep "$period" & wait $!
		else
			say "heartbeat paused: cannot read $temp; looking for $zone again every $retry s"
			temp= state=missing
			sleep "$retry" & wait $!
		fi
	done
}

case ${1-} in
	mark) shift; do_mark "$@" ;;
	heartbeat) shift; do_heartbeat "$@" ;;
	--version) echo "$TAG.sh $VERSION" ;;
	*) usage ;;
esac

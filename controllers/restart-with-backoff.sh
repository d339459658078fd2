#!/bin/sh
# controllers/restart-with-backoff.sh - restart every service that goes down,
# waiting longer after each quick failure (exponential backoff).
#
# This is a daemonproxy *controller*: a service started with
#
#     service.args     backoff  sh  controllers/restart-with-backoff.sh
#     service.fds      backoff  control.event  control.cmd  stderr
#     service.auto_up  backoff  1  always
#
# so fd 0 carries events from daemonproxy to us, fd 1 carries our commands
# to daemonproxy, and fd 2 is daemonproxy's stderr (for our own messages).
# Both directions are lines of TAB-separated fields ending in LF; see
# daemonproxy(8) for every command and event.
#
# The policy.  When a service exits (a "service.state NAME down" event with
# a pid), it is started again after DELAY seconds.  DELAY starts at
# BACKOFF_MIN and doubles after every run shorter than BACKOFF_STABLE
# seconds, up to BACKOFF_MAX; a run of at least BACKOFF_STABLE seconds
# counts as a success and the next delay is BACKOFF_MIN again.  With the
# defaults a service that crashes at once is restarted after 1, 2, 4, 8, 16,
# 32, 64, 64, ... seconds.
#
# Left alone:
#   * this controller itself (daemonproxy's auto_up restarts it, see above);
#   * services tagged "nobackoff" (one of the TAB-separated fields of
#     "service.tags NAME ...", e.g. "service.tags  hello  nobackoff"): use it
#     for one-shot jobs;
#   * services with auto_up triggers: daemonproxy restarts those itself, and
#     a service started by a signal trigger is usually a one-shot handler;
#   * deleted services, and services whose restart someone cancelled with
#     "service.start NAME -" (their "down" event has no pid);
#   * services that were never started.
# To stop a service for good, tag it "nobackoff" (or delete it) before you
# signal it; otherwise it comes back.
#
# How the delay works without sleeping.  The script never sleeps: it tells
# daemonproxy when to start the service, "service.start NAME WHEN", where
# WHEN is a second of daemonproxy's monotonic clock.  daemonproxy shows
# the service as "start" (pending) until then, forks it on time, and keeps
# the pending start even if this controller dies meanwhile; the script
# goes straight back to reading events.  The "down" event's TS field is
# the second in which the process was reaped, truncated, so the exit
# happened somewhere in [TS, TS+1): WHEN = TS + 0.5 + DELAY makes the real
# pause DELAY seconds give or take half a second.  (Fractional WHEN values
# are a daemonproxy 1.2 extension; daemonproxy 1.1 accepts whole seconds
# only.)
#
# Start-up and resync.  The script sends "statedump" and an "echo" to learn
# the current state.  A service found down after a run (it exited while
# this controller was not running) is restarted like any other, counting
# the delay from its exit.  If daemonproxy reports "overflow" (we read too
# slowly and missed events), the same happens again.  The backoff delays
# live in this script only: when it is restarted, every delay starts again
# at BACKOFF_MIN.
#
# Copy it and adapt it.  It needs only a POSIX sh (no sleep, sed or awk).

# --- settings (the environment is daemonproxy's own; or set them in
# service.args:  backoff  env  BACKOFF_MAX=30  sh  restart-with-backoff.sh) ---

# First delay, in seconds; fractions like 0.25 are allowed (millisecond
# precision).
BACKOFF_MIN=${BACKOFF_MIN:-1}
# Longest delay, in seconds.
BACKOFF_MAX=${BACKOFF_MAX:-64}
# A run at least this long (seconds) resets the delay to BACKOFF_MIN.
# Compared with the event's UPTIME, which is in whole seconds.
BACKOFF_STABLE=${BACKOFF_STABLE:-10}

TAB=$(printf '\t')
# A broken stderr (its reader gone) must not kill this controller: its
# messages then fail quietly.
trap '' PIPE
DUMP_DONE=restart-with-backoff.dump-done   # our echo token

# --- talking to daemonproxy --------------------------------------------------

# send FIELD...: write one command, fields joined by TABs, in a single write.
send() {
	_line=$1
	shift
	for _f in "$@"; do
		_line=$_line$TAB$_f
	done
	printf '%s\n' "$_line"
}

# note TEXT: a message for the person watching daemonproxy's stderr.
note() {
	printf 'restart-with-backoff: %s\n' "$*" >&2
}

# --- arithmetic in milliseconds (sh has integers only) ---------------------

# to_ms NAME VALUE DEFAULT: seconds ("2", "0.5", "1.25") -> $MS milliseconds.
to_ms() {
	_v=$2
	case $_v in
	'' | . | *[!0-9.]* | *.*.*)
		note "$1=$_v is not a number of seconds; using $3"
		_v=$3
		;;
	esac
	_int=${_v%%.*}
	case $_v in
	*.*) _frac=${_v#*.} ;;
	*) _frac= ;;
	esac
	_frac=${_frac}000
	_frac=${_frac%"${_frac#???}"}       # the first three digits
	while :; do                         # no leading zeros: sh reads 08 as octal
		case $_int in
		0?*) _int=${_int#0} ;;
		*) break ;;
		esac
	done
	MS=$((${_int:-0} * 1000 + 1$_frac - 1000))
}

# to_s MS: milliseconds -> $S seconds, "3" or "3.250".
to_s() {
	_r=$(($1 % 1000))
	case $_r in
	0) S=$(($1 / 1000)); return ;;
	?) _r=00$_r ;;
	??) _r=0$_r ;;
	esac
	S=$(($1 / 1000)).$_r
}

to_ms BACKOFF_MIN "$BACKOFF_MIN" 1
MIN_MS=$MS
to_ms BACKOFF_MAX "$BACKOFF_MAX" 64
MAX_MS=$MS
to_ms BACKOFF_STABLE "$BACKOFF_STABLE" 10
STABLE_MS=$MS
[ "$MAX_MS" -ge "$MIN_MS" ] || MAX_MS=$MIN_MS

# --- what we know about each service -----------------------------------------

# Per service NAME, in variables named after it ("." "-" "_", allowed in
# service names but not in variable names, are encoded as _2e _2d _5f):
#   st_KEY  its state (down, start, up)
#   nb_KEY  1 if tagged "nobackoff"
#   au_KEY  1 if it has auto_up triggers
#   dl_KEY  the delay for its next restart, in ms (unset: BACKOFF_MIN)
#   ts_KEY, up_KEY, dn_KEY  TS, UPTIME, DOWNTIME of its last "down" seen
#          while a statedump is being read
SELF=     # our own service name: the one that is up with our pid
DOWN=     # services seen down during a statedump, space-separated

# key NAME: $KEY = NAME made usable in a variable name.
key() {
	_in=$1
	KEY=
	while [ -n "$_in" ]; do
		_rest=${_in#?}
		_c=${_in%"$_rest"}
		_in=$_rest
		case $_c in
		.) KEY=${KEY}_2e ;;
		-) KEY=${KEY}_2d ;;
		_) KEY=${KEY}_5f ;;
		*) KEY=$KEY$_c ;;
		esac
	done
}

forget() { # KEY
	unset "st_$1" "nb_$1" "au_$1" "dl_$1" "ts_$1" "up_$1" "dn_$1"
}

# --- the policy ----------------------------------------------------------------

# restart NAME TS UPTIME DOWNTIME: NAME went down (reaped in second TS,
# after UPTIME seconds, DOWNTIME seconds ago); schedule its restart.
restart() {
	[ "$1" = "$SELF" ] && return
	key "$1"
	eval "_nb=\${nb_$KEY-} _au=\${au_$KEY-} _d=\${dl_$KEY-}"
	[ -n "$_nb" ] && return
	[ -n "$_au" ] && return
	_up=${3%%.*}
	_dn=${4%%.*}

	# A stable run resets the delay; the first failure uses BACKOFF_MIN.
	if [ "$((_up * 1000))" -ge "$STABLE_MS" ] || [ -z "$_d" ]; then
		_d=$MIN_MS
	fi
	# The delay after the next quick failure: double, up to BACKOFF_MAX.
	_next=$((_d * 2))
	[ "$_next" -le "$MAX_MS" ] || _next=$MAX_MS
	eval "dl_$KEY=\$_next"

	if [ "$_dn" -gt 0 ] && [ "$((_dn * 1000))" -ge "$((_d + 500))" ]; then
		# Found down in a statedump and already overdue: start it now.
		# (An old TS could also be too old for daemonproxy to accept.)
		note "$1 has been down for ${_dn}s; starting it"
		send service.start "$1"
	else
		to_s "$((${2%%.*} * 1000 + 500 + _d))"
		_when=$S
		to_s "$_d"
		note "$1 went down after ${_up}s; starting it again in ${S}s"
		send service.start "$1" "$_when"
	fi
}

# --- main loop ---------------------------------------------------------------

phase=dump   # "dump" while a statedump is being read, then "live"
send statedump
send echo "$DUMP_DONE"

set -f   # no globbing when splitting lines into fields below
while IFS= read -r line; do
	# Split the line at TABs into $1, $2, ...  TAB counts as white space for
	# IFS, so empty fields vanish; no field we look at is ever empty.
	_ifs=$IFS
	IFS=$TAB
	# shellcheck disable=SC2086 # splitting is the point
	set -- $line
	IFS=$_ifs

	case $1 in
	service.state)
		# service.state NAME STATE TS PID EXITREASON EXITVALUE UPTIME DOWNTIME
		[ $# -ge 9 ] || continue
		if [ "$3" = up ] && [ "$5" = "$$" ]; then
			SELF=$2
		fi
		key "$2"
		if [ "$3" = deleted ]; then
			forget "$KEY"
			continue
		fi
		eval "st_$KEY=\$3"
		# "down" with a pid is an exit; without one, a cancelled start.
		if [ "$3" = down ] && [ "$5" != - ]; then
			if [ "$phase" = dump ]; then
				# The tags and auto_up lines of the dump come after
				# this one: decide when the dump is complete.
				eval "ts_$KEY=\$4 up_$KEY=\$8 dn_$KEY=\$9"
				case " $DOWN " in
				*" $2 "*) ;;
				*) DOWN="$DOWN $2" ;;
				esac
			else
				restart "$2" "$4" "$8" 0
			fi
		fi
		;;
	service.tags)
		# service.tags NAME TAG...
		key "$2"
		unset "nb_$KEY"
		shift 2
		for _t in "$@"; do
			[ "$_t" = nobackoff ] && eval "nb_$KEY=1"
		done
		;;
	service.auto_up)
		# service.auto_up NAME INTERVAL TRIGGER...  or  service.auto_up NAME -
		key "$2"
		if [ "$3" = - ]; then
			unset "au_$KEY"
		else
			eval "au_$KEY=1"
		fi
		;;
	"$DUMP_DONE")
		phase=live
		for _n in $DOWN; do
			key "$_n"
			_st=
			eval "_st=\${st_$KEY-} _ts=\${ts_$KEY-} _up=\${up_$KEY-} _dn=\${dn_$KEY-}"
			# Still down, unless it was started or deleted meanwhile.
			if [ "$_st" = down ] && [ -n "$_ts" ]; then
				restart "$_n" "$_ts" "$_up" "$_dn"
			fi
			unset "ts_$KEY" "up_$KEY" "dn_$KEY"
		done
		DOWN=
		;;
	overflow)
		# daemonproxy dropped events meant for us: read the state again.
		phase=dump
		send statedump
		send echo "$DUMP_DONE"
		;;
	error)
		# Expected when racing someone else: the service was started or
		# deleted before our service.start arrived.  Anything else is shown.
		case $2 in
		"service is not startable"* | "No such service"*) ;;
		*) note "daemonproxy: ${line#error"$TAB"}" ;;
		esac
		;;
	esac
done

# daemonproxy has closed the connection (it exited, or dropped us).
exit 0

#!/bin/sh
# controllers/shutdown.sh - stop every service cleanly, then daemonproxy itself.
#
# This is a daemonproxy *controller*: a service started with
#
#     service.fds   shutdown  control.event  control.cmd  stderr
#
# so fd 0 carries events from daemonproxy to us, fd 1 carries our commands
# to daemonproxy, and fd 2 is daemonproxy's stderr (for our own messages).
# Both directions are lines of TAB-separated fields ending in LF; see
# daemonproxy(8) for every command and event.
#
# daemonproxy never exits on SIGINT or SIGTERM: it only counts them and
# tells its controllers.  controllers/example.conf starts this script on the
# first of them with
#
#     service.auto_up  shutdown  1  SIGINT  SIGTERM
#
# What the script does:
#   1. sends "statedump" and then "echo dump-done", and records the state of
#      every service from the service.state lines of the dump;
#   2. for every other service except the "late" ones (see LATE below):
#      turns auto-up off, cancels a pending start and sends SIGTERM if it
#      is up - writers stop first, while their logger still reads the pipe;
#   3. when those are all down (or deleted), does the same to the late ones;
#   4. when everything but this script is down, sends "terminate 0" and
#      waits for daemonproxy to close the connection.
# If services are still up TIMEOUT seconds after the start, everything left
# gets SIGKILL; if even that has not finished after KILL_WAIT more seconds,
# the script terminates daemonproxy anyway.
#
# Copy it and adapt it: the settings below are the usual things to change.
# It needs only a POSIX sh, printf, sed, sleep and kill.

# --- settings (the environment is daemonproxy's own) ------------------------

# Services stopped last, space-separated: loggers that read the others' output.
LATE=${SHUTDOWN_LATE:-logger}
# Seconds to wait for SIGTERM to work before sending SIGKILL.
TIMEOUT=${SHUTDOWN_TIMEOUT:-10}
# Seconds to wait after SIGKILL before terminating regardless.
KILL_WAIT=${SHUTDOWN_KILL_WAIT:-3}
# Exit code for daemonproxy ("terminate N").
EXIT_CODE=${SHUTDOWN_EXIT_CODE:-0}
# Terminate guard code, if daemonproxy runs with one (--exit-guard, PID 1);
# then "terminate" also needs exec-on-exit (-E or terminate.exec_args).
GUARD=${SHUTDOWN_GUARD:-}

# A terminal Ctrl-C goes to the whole foreground process group, and we are
# in it unless daemonproxy runs with --setpgid (as "make run" does).
# Ignore further Ctrl-Cs so that a second one does not cut the shutdown short.
trap '' INT
# Our stderr may be a pipe whose reader is gone ("make run | tee" after
# Ctrl-C killed tee): a message that cannot be written must not kill us
# half-way through the shutdown. (Writes then fail quietly.)
trap '' PIPE

TAB=$(printf '\t')

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
	printf 'shutdown: %s\n' "$*" >&2
}

# timer SECONDS TOKEN: after SECONDS, have daemonproxy echo TOKEN back to us.
# The "echo" command goes out on fd 1 like any other command and its reply
# arrives on fd 0 like any event, so the main loop needs no read timeout
# (POSIX read has none).  Only one timer runs at a time.
TIMER=
timer() {
	cancel_timer
	(
		trap 'kill "$_s" 2>/dev/null; exit 0' TERM
		sleep "$1" >/dev/null 2>&1 &
		_s=$!
		wait "$_s" && send echo "$2"
	) &
	TIMER=$!
}
cancel_timer() {
	if [ -n "$TIMER" ]; then
		kill "$TIMER" 2>/dev/null
		TIMER=
	fi
}

# --- what we know about the services -----------------------------------------

# The state of service NAME (down, start, up or deleted) lives in a variable
# st_<NAME>, and off_<NAME> is set once its auto-up has been turned off.
# "." and "-", allowed in service names but not in variable names, are
# encoded first.
SERVICES=     # every service name seen, space-separated
SELF=         # our own service name: the one that is up with our pid

key() {
	printf '%s' "$1" | sed 's/_/_5f/g; s/\./_2e/g; s/-/_2d/g'
}
set_state() { # NAME STATE
	_v=st_$(key "$1")
	eval "$_v=\$2"
	case " $SERVICES " in
	*" $1 "*) ;;
	*) SERVICES="$SERVICES $1" ;;
	esac
}
get_state() { # NAME -> $STATE
	_v=st_$(key "$1")
	eval "STATE=\${$_v-}"
}
# auto_up_off NAME: send "service.auto_up NAME -" once per service, so it is
# not restarted; it leaves the interval and the state alone.
auto_up_off() {
	_v=off_$(key "$1")
	eval "_off=\${$_v-}"
	if [ -z "$_off" ]; then
		send service.auto_up "$1" -
		eval "$_v=1"
	fi
}
is_late() {
	case " $LATE " in
	*" $1 "*) return 0 ;;
	*) return 1 ;;
	esac
}

# --- stopping ----------------------------------------------------------------

# phase: dump     - waiting for the statedump to end;
#        early    - stopping every service but the late ones;
#        late     - stopping everything (late ones included);
#        finished - "terminate" sent, waiting for daemonproxy to go away.
phase=dump
SIGNAL=SIGTERM   # becomes SIGKILL after the timeout

# in_scope NAME: true if NAME is to be stopped in the current phase.
in_scope() {
	[ "$1" = "$SELF" ] && return 1
	case $phase in
	early) ! is_late "$1" ;;
	late) return 0 ;;
	*) return 1 ;;
	esac
}

# stop NAME: make sure NAME stays down; STATE must hold its state.
# Auto-up is turned off so it is not restarted, "service.start NAME -"
# cancels a start that is pending, and a signal ends a running process.
# Its exit comes back later as a service.state "down".
stop() {
	case $STATE in
	up)
		note "sending $SIGNAL to $1"
		auto_up_off "$1"
		send service.signal "$1" "$SIGNAL"
		;;
	start)
		auto_up_off "$1"
		send service.start "$1" -
		;;
	down)
		auto_up_off "$1"
		;;
	esac
}

# stop_all: stop every service in scope.
stop_all() {
	for _n in $SERVICES; do
		if in_scope "$_n"; then
			get_state "$_n"
			stop "$_n"
		fi
	done
}

# all_down: true when no service in scope is up or about to start.
all_down() {
	for _n in $SERVICES; do
		if in_scope "$_n"; then
			get_state "$_n"
			case $STATE in
			up | start) return 1 ;;
			esac
		fi
	done
	return 0
}

finish() {
	cancel_timer
	phase=finished
	note "services are down; terminating daemonproxy"
	if [ -n "$GUARD" ]; then
		send terminate "$EXIT_CODE" "$GUARD"
	else
		send terminate "$EXIT_CODE"
	fi
}

# advance: move on to the next phase when the current one is complete.
advance() {
	if [ "$phase" = early ] && all_down; then
		phase=late
		stop_all
	fi
	if [ "$phase" = late ] && all_down; then
		finish
	fi
}

# --- main loop ---------------------------------------------------------------

send statedump
send echo dump-done

set -f   # no globbing when splitting lines into fields below
while IFS= read -r line; do
	# Split the line at TABs into $1, $2, ...  (No field we use is empty.)
	_ifs=$IFS
	IFS=$TAB
	# shellcheck disable=SC2086 # splitting is the point
	set -- $line
	IFS=$_ifs
	[ "$phase" = finished ] && continue

	case $1 in
	service.state)
		# service.state NAME STATE TS PID EXITREASON EXITVALUE UPTIME DOWNTIME
		if [ "$3" = up ] && [ "$5" = "$$" ]; then
			SELF=$2
		fi
		set_state "$2" "$3"
		# A service can come up after we stopped it (a restart was already
		# due, or Ctrl-C killed it and auto-up restarted it): stop it again.
		if in_scope "$2"; then
			case $3 in
			up | start)
				STATE=$3
				stop "$2"
				;;
			esac
		fi
		;;
	dump-done)
		if [ "$phase" = dump ]; then
			[ -n "$SELF" ] || SELF=shutdown
			note "stopping services"
			phase=early
			timer "$TIMEOUT" shutdown-timeout
			stop_all
		fi
		;;
	shutdown-timeout)
		note "still running after ${TIMEOUT}s; using SIGKILL"
		SIGNAL=SIGKILL
		phase=late
		stop_all
		timer "$KILL_WAIT" shutdown-giveup
		;;
	shutdown-giveup)
		note "giving up waiting"
		finish
		;;
	overflow)
		# daemonproxy dropped events meant for us: ask for the state again.
		# Its service.state lines refresh what we know; dump-done is then
		# ignored (phase is no longer "dump").
		send statedump
		send echo dump-done
		;;
	error)
		# Expected when racing a service's exit; anything else is shown.
		case $2 in
		"service is not running"* | "no service.start pending"*) ;;
		"terminate guard code required"* | "incorrect terminate guard code"* | "cannot exit"*)
			note "daemonproxy refused to exit: it has a terminate guard (process 1 arms one);"
			note "set SHUTDOWN_GUARD and an exit program, or use controllers/container-stop.sh"
			;;
		*) note "daemonproxy: ${line#error"$TAB"}" ;;
		esac
		;;
	esac
	advance
done

# daemonproxy has closed the connection (it exited, or dropped us).
cancel_timer
exit 0

#!/bin/sh
# controllers/container-stop.sh - graceful stop of a container whose init is
# daemonproxy.
#
# Run it as a controller service that is always up:
#
#     service.args     stop   sh  /etc/daemonproxy/container-stop.sh
#     service.fds      stop   control.event  control.cmd  stderr
#     service.auto_up  stop   1  always
#
# fd 0 brings daemonproxy's events, fd 1 takes our commands, fd 2 is
# daemonproxy's log.  Lines are TAB-separated fields (see daemonproxy(8)).
#
# What it does:
#   * it learns every service from a statedump, then follows service.state
#     events, remembering the order in which services came up;
#   * on the first SIGTERM or SIGINT that daemonproxy receives (a container
#     runtime's "stop" sends SIGTERM to PID 1) - or when the main service
#     exits, if MAIN_EXIT_STOPS=1 - it stops the container:
#       1. turns auto-up off for every service but itself and cancels
#          pending starts,
#       2. sends STOP_SIGNAL to the services in reverse start order (the
#          last one started first),
#       3. when GRACE seconds have passed and something is still up, sends
#          SIGKILL to all of it,
#       4. terminates daemonproxy with the main service's exit status
#          (128+N if it was killed by signal N; 0 if there is no main service).
#
# The main service is the one named by MAIN, or else the one whose
# service.tags contain the word "main".
#
# Waiting without a read timeout (POSIX sh has none): a helper service named
# by GRACE_SVC runs "sleep GRACE"; its own "down" event is the alarm.
#
# It needs only a POSIX sh with printf, sed, sort, tail and tr.

# --- settings ----------------------------------------------------------------
MAIN=${MAIN:-}                        # name of the main service
GRACE=${GRACE:-10}                    # seconds before SIGKILL
STOP_SIGNAL=${STOP_SIGNAL:-SIGTERM}   # what to send first
MAIN_EXIT_STOPS=${MAIN_EXIT_STOPS:-0}  # 1: the main service's exit stops all
GRACE_SVC=${GRACE_SVC:-container-stop.grace}  # name of the alarm service
# The terminate guard: daemonproxy as PID 1 arms it with code 1 unless told
# otherwise; "terminate" is refused while it is armed without exec-on-exit,
# so the script disarms it first.  Set GUARD= (empty) if no guard is armed.
if [ -z "${GUARD+set}" ]; then
	if [ "$PPID" = 1 ]; then GUARD=1; else GUARD=; fi
fi

# A terminal Ctrl-C or a signal to the whole process group must not kill
# the controller: daemonproxy counts the signal and tells us.
trap '' INT TERM
# A broken stderr (its reader gone) must not end the stop half-way.
trap '' PIPE

TAB=$(printf '\t')
PENDING_STOP=0
GRACE_UP=0
SELF=
SEEN_DUMP=0
STOPPING=0
KILLED=0
MAIN_CODE=0
ORDER=""      # lines "TS PID NAME" of services that are up
KNOWN=""      # " name name ... " of every service we know of
PENDING=""    # services with a start pending
TAGS_MAIN=""  # name of a service tagged "main"

send() {
	_l=$1
	shift
	for _f in "$@"; do _l=$_l$TAB$_f; done
	printf '%s\n' "$_l"
}

note() { printf 'container-stop: %s\n' "$*" >&2; }

# Signal names as daemonproxy prints them -> numbers (for 128+N).
signum() {
	case $1 in
	SIGHUP) echo 1 ;; SIGINT) echo 2 ;; SIGQUIT) echo 3 ;; SIGILL) echo 4 ;;
	SIGTRAP) echo 5 ;; SIGABRT) echo 6 ;; SIGBUS) echo 7 ;; SIGFPE) echo 8 ;;
	SIGKILL) echo 9 ;; SIGUSR1) echo 10 ;; SIGSEGV) echo 11 ;; SIGUSR2) echo 12 ;;
	SIGPIPE) echo 13 ;; SIGALRM) echo 14 ;; SIGTERM) echo 15 ;; *) echo 0 ;;
	esac
}

main_name() {
	if [ -n "$MAIN" ]; then echo "$MAIN"; else echo "$TAGS_MAIN"; fi
}

# Remove NAME from ORDER.
forget_up() {
	ORDER=$(printf '%s\n' "$ORDER" | while read -r _t _p _n; do
		[ -n "$_n" ] && [ "$_n" != "$1" ] && printf '%s %s %s\n' "$_t" "$_p" "$_n"
	done)
}

# The most recently started service still up (other than us and the timer).
last_up() {
	printf '%s\n' "$ORDER" | sort -k1,1n -k2,2n | while read -r _t _p _n; do
		[ -n "$_n" ] && echo "$_n"
	done | tail -n 1
}

all_down() {
	[ -z "$(last_up)" ]
}

finish() {
	[ "$GRACE_UP" = 1 ] && send service.signal "$GRACE_SVC" SIGKILL
	note "stopped; exit status $MAIN_CODE"
	if [ -n "$GUARD" ]; then
		send terminate.guard - "$GUARD"
	fi
	send terminate "$MAIN_CODE"
	# daemonproxy exits at the end of this pass; keep reading until EOF.
	while IFS= read -r _ignored; do :; done
	exit 0
}

# Signal, in reverse start order, every service still up that has not had
# the stop signal yet; finish once all are down.
step() {
	if all_down; then
		finish
	fi
	[ "$KILLED" = 1 ] && return
	for _n in $(printf '%s\n' "$ORDER" | sort -k1,1nr -k2,2nr | while read -r _t _p _x; do echo "$_x"; done); do
		case " $SIGNALLED " in
		*" $_n "*) ;;
		*)
			note "sending $STOP_SIGNAL to $_n"
			send service.signal "$_n" "$STOP_SIGNAL"
			SIGNALLED="$SIGNALLED $_n"
			;;
		esac
	done
}

begin_stop() {
	[ "$STOPPING" = 1 ] && return
	STOPPING=1
	SIGNALLED=""
	note "stopping (grace ${GRACE}s)"
	for _n in $KNOWN; do
		send service.auto_up "$_n" -
	done
	for _n in $PENDING; do
		send service.start "$_n" -
	done
	# The alarm: a service that sleeps GRACE seconds.
	send service.args "$GRACE_SVC" sleep "$GRACE"
	send service.start "$GRACE_SVC"
	step
}

on_state() { # NAME STATE TS PID REASON VALUE
	_n=$1
	[ "$_n" = "$SELF" ] && return
	if [ "$_n" = "$GRACE_SVC" ]; then
		if [ "$2" = up ]; then GRACE_UP=1; else GRACE_UP=0; fi
		if [ "$2" = down ] && [ "$STOPPING" = 1 ] && [ "$KILLED" = 0 ]; then
			KILLED=1
			for _k in $(printf '%s\n' "$ORDER" | while read -r _t _p _x; do echo "$_x"; done); do
				note "grace period over: SIGKILL to $_k"
				send service.signal "$_k" SIGKILL
			done
		fi
		return
	fi
	case " $KNOWN " in *" $_n "*) ;; *) KNOWN="$KNOWN $_n" ;; esac
	PENDING=$(printf '%s' " $PENDING " | sed "s/ $_n / /")
	case $2 in
	start)
		PENDING="$PENDING $_n"
		;;
	up)
		forget_up "$_n"
		ORDER=$(printf '%s\n%s %s %s' "$ORDER" "$3" "$4" "$_n")
		# Came back during the stop (a restart already due): signal it again.
		SIGNALLED=$(printf '%s' " $SIGNALLED " | sed "s/ $_n / /")
		;;
	deleted)
		forget_up "$_n"
		KNOWN=$(printf '%s' " $KNOWN " | sed "s/ $_n / /")
		;;
	down)
		forget_up "$_n"
		if [ "$_n" = "$(main_name)" ] && [ "$5" != - ]; then
			if [ "$5" = signal ]; then
				MAIN_CODE=$((128 + $(signum "$6")))
			else
				MAIN_CODE=$6
			fi
			[ "$MAIN_EXIT_STOPS" = 1 ] && [ "$SEEN_DUMP" = 1 ] && begin_stop
		fi
		;;
	esac
	[ "$STOPPING" = 1 ] && step
}

# --- main loop ---------------------------------------------------------------
send statedump
send echo "container-stop.dump-done"
while IFS="$TAB" read -r ev a b c d e f g h; do
	case $ev in
	service.state)
		# Our own pid is the one whose "up" carries $$.
		if [ -z "$SELF" ] && [ "$b" = up ] && [ "$d" = "$$" ]; then
			SELF=$a
			continue
		fi
		on_state "$a" "$b" "$c" "$d" "$e" "$f"
		;;
	service.tags)
		case " $(printf '%s' "$b$TAB$c$TAB$d" | tr '\t' ' ') " in
		*" main "*) TAGS_MAIN=$a ;;
		esac
		;;
	signal)
		# A signal line is sent while the signal is pending; the first
		# SIGTERM/SIGINT starts the stop.
		# Pending ones arrive before our statedump: act after it.
		case $a in
		SIGTERM | SIGINT) if [ "$SEEN_DUMP" = 1 ]; then begin_stop; else PENDING_STOP=1; fi ;;
		esac
		;;
	container-stop.dump-done)
		SEEN_DUMP=1
		if [ -z "$SELF" ]; then
			note "cannot tell which service I am; is this a controller service?"
		fi
		[ "$PENDING_STOP" = 1 ] && begin_stop
		;;
	overflow)
		note "event overflow: resynchronising"
		send statedump
		;;
	esac
	: "$g" "$h"
done

/* fail.h - the engine's one way to refuse: a message for the caller and a negative errno.
 *
 * Every setup step that can be refused (engine.c, steering.c) reports through this, so the text
 * that reaches the agent's condition and the CLI always comes with the code that classifies it
 * (permanent, transient, in use).
 */
#ifndef TICKWIRE_FAIL_H
#define TICKWIRE_FAIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* Writes the message into err (when given) and returns -|code|. */
static inline int tw_fail(char *err, size_t errlen, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static inline int tw_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
	va_list ap;

	if (err && errlen) {
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return code < 0 ? code : -code;
}

#endif

package org.mobilepeft.demo

import android.app.Notification
import android.app.NotificationChannel
import android.app.NotificationManager
import android.app.PendingIntent
import android.app.Service
import android.content.Context
import android.content.Intent
import android.content.pm.ServiceInfo
import android.os.Build
import android.os.IBinder
import android.os.PowerManager
import android.util.Log
import java.io.File
import java.util.concurrent.atomic.AtomicBoolean

/**
 * Trains in a foreground service, so a run outlives its activity (rotation, the app in the
 * background, the activity destroyed) and shows its progress in a notification with a Cancel
 * action.
 *
 * * Start: [start] (bundle directory, data folder, total steps). One run at a time in the
 *   process; a second start while one trains is refused, and [RunLock] refuses a second run on the
 *   same checkpoint directory from anywhere.
 * * Cancel: [cancel] or the notification's action set a flag that the core loop checks before
 *   every step; the loop then checkpoints what it has, and the next start resumes from there.
 * * Killed: `START_REDELIVER_INTENT` makes Android restart the service with the same request after
 *   the process was killed, and the loop resumes from the newest checkpoint (same data position,
 *   masks, losses). A run that ended (done, cancelled, failed) stops the service, so nothing is
 *   redelivered.
 * * Out of memory: an `OutOfMemoryError` on the training thread is caught and reported (step,
 *   PSS) instead of crashing the app; the last checkpoint stays intact. A native allocation failure
 *   inside ExecuTorch / ONNX Runtime is not a Java error and can still end the process: the
 *   restart then resumes, and `adb shell dumpsys meminfo` shows where memory went.
 */
class TrainingService : Service() {
    private var wakeLock: PowerManager.WakeLock? = null
    private var lastNotified = 0L

    override fun onBind(intent: Intent?): IBinder? = null

    override fun onStartCommand(intent: Intent?, flags: Int, startId: Int): Int {
        if (intent?.action == ACTION_CANCEL) {
            cancelRequested.set(true)
            return START_NOT_STICKY
        }
        val bundle = intent?.getStringExtra(EXTRA_BUNDLE)
        val data = intent?.getStringExtra(EXTRA_DATA)
        val steps = intent?.getIntExtra(EXTRA_STEPS, 0) ?: 0
        // Every startForegroundService() must be answered by startForeground() within seconds, even a
        // request that is then refused, or Android ends the app.
        try {
            goForeground(notification(TrainingMonitor.status.copy(bundle = bundle?.let { File(it).name })))
        } catch (e: Exception) {
            // Android 12+ refuses a foreground start from the background (e.g. a restart after a kill
            // while the app is not visible). UNVERIFIED on a device: which restarts it exempts.
            if (!running.get()) {
                TrainingMonitor.update { it.copy(phase = RunPhase.FAILED, message = "Android did not let the run continue in the background (${e.message}); open the app and press Train to resume.") }
                stopSelf(startId)
            }
            return START_NOT_STICKY
        }
        if (bundle == null || data == null || steps < 1) {
            if (!running.get()) stopSelf(startId)
            return START_NOT_STICKY
        }
        if (!running.compareAndSet(false, true)) {
            TrainingMonitor.update { it.logged("a run is already training; cancel it first") }
            return START_NOT_STICKY
        }
        cancelRequested.set(false)
        acquireWakeLock()
        val observer: (TrainingStatus) -> Unit = { s -> notifyProgress(s) }
        TrainingMonitor.observe(observer)
        Thread({
            try {
                TrainingJob(File(bundle), File(data), File(filesDir, RUNS_DIR), steps, cancelRequested::get).run()
            } catch (e: OutOfMemoryError) {
                val status = TrainingMonitor.status
                Log.e(TAG, "out of memory", e)
                TrainingMonitor.update {
                    it.copy(
                        phase = RunPhase.FAILED,
                        message = "out of memory at step ${status.step} (PSS ${status.pssKb?.div(1024) ?: "?"} MB); the last checkpoint is intact. " +
                            "Close other apps, or export the bundle with a smaller batch size / int4 backbone.",
                    )
                }
            } catch (e: Throwable) {
                Log.e(TAG, "training failed", e)
                TrainingMonitor.update { it.copy(phase = RunPhase.FAILED, message = "${e.javaClass.simpleName}: ${e.message}") }
            } finally {
                TrainingMonitor.stopObserving(observer)
                releaseWakeLock()
                running.set(false)
                notifyProgress(TrainingMonitor.status, force = true)
                stopForeground(STOP_FOREGROUND_DETACH)
                stopSelf() // also drops the redelivery of the start request: the run ended
            }
        }, "mobile-peft-training").start()
        return START_REDELIVER_INTENT
    }

    private fun goForeground(n: Notification) {
        if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.Q) {
            startForeground(NOTIFICATION_ID, n, ServiceInfo.FOREGROUND_SERVICE_TYPE_DATA_SYNC)
        } else {
            startForeground(NOTIFICATION_ID, n)
        }
    }

    private fun acquireWakeLock() {
        // A partial wake lock keeps the CPU on with the screen off; the timeout bounds a run that hangs.
        wakeLock = (getSystemService(Context.POWER_SERVICE) as PowerManager)
            .newWakeLock(PowerManager.PARTIAL_WAKE_LOCK, "mobilepeft:training")
            .apply { acquire(WAKE_LOCK_MS) }
    }

    private fun releaseWakeLock() {
        wakeLock?.let { if (it.isHeld) it.release() }
        wakeLock = null
    }

    private fun notifyProgress(status: TrainingStatus, force: Boolean = false) {
        val now = System.currentTimeMillis()
        if (!force && now - lastNotified < NOTIFY_EVERY_MS) return
        lastNotified = now
        getSystemService(NotificationManager::class.java).notify(NOTIFICATION_ID, notification(status))
    }

    private fun notification(status: TrainingStatus): Notification {
        val manager = getSystemService(NotificationManager::class.java)
        if (manager.getNotificationChannel(CHANNEL) == null) {
            manager.createNotificationChannel(NotificationChannel(CHANNEL, "Training", NotificationManager.IMPORTANCE_LOW))
        }
        val open = PendingIntent.getActivity(this, 0, Intent(this, MainActivity::class.java), PendingIntent.FLAG_IMMUTABLE)
        val cancel = PendingIntent.getService(
            this, 1, Intent(this, TrainingService::class.java).setAction(ACTION_CANCEL), PendingIntent.FLAG_IMMUTABLE,
        )
        val loss = status.losses.lastOrNull()?.let { " · loss %.4f".format(it) } ?: ""
        val builder = Notification.Builder(this, CHANNEL)
            .setSmallIcon(android.R.drawable.stat_sys_download)
            .setContentTitle("Personalising ${status.bundle ?: "a bundle"}")
            .setContentText("${status.message} · step ${status.step}/${status.totalSteps}$loss")
            .setContentIntent(open)
            .setOnlyAlertOnce(true)
            .setOngoing(status.running)
        if (status.running) {
            builder.setProgress(maxOf(1, status.totalSteps), status.step, status.phase == RunPhase.PREPARING)
            builder.addAction(Notification.Action.Builder(null, "Cancel", cancel).build())
        }
        return builder.build()
    }

    companion object {
        private const val TAG = "TrainingService"
        const val ACTION_START = "org.mobilepeft.demo.START"
        const val ACTION_CANCEL = "org.mobilepeft.demo.CANCEL"
        const val EXTRA_BUNDLE = "bundle"
        const val EXTRA_DATA = "data"
        const val EXTRA_STEPS = "steps"
        /** Runs live in internal storage: `<filesDir>/runs/<bundle>-<manifest sha256 prefix>/`. */
        const val RUNS_DIR = "runs"
        private const val CHANNEL = "training"
        private const val NOTIFICATION_ID = 1
        private const val NOTIFY_EVERY_MS = 1000L
        private const val WAKE_LOCK_MS = 6 * 60 * 60 * 1000L

        private val cancelRequested = AtomicBoolean(false)
        private val running = AtomicBoolean(false)

        val isRunning: Boolean get() = running.get()

        fun start(context: Context, bundleDir: File, dataDir: File, steps: Int) {
            val intent = Intent(context, TrainingService::class.java).setAction(ACTION_START)
                .putExtra(EXTRA_BUNDLE, bundleDir.absolutePath)
                .putExtra(EXTRA_DATA, dataDir.absolutePath)
                .putExtra(EXTRA_STEPS, steps)
            context.startForegroundService(intent)
        }

        fun cancel(context: Context) {
            cancelRequested.set(true) // the loop sees it before its next step, even if the intent is slow
            context.startService(Intent(context, TrainingService::class.java).setAction(ACTION_CANCEL))
        }
    }
}

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
}

val executorchVersion: String by project
val onnxruntimeTrainingVersion: String by project

android {
    namespace = "org.mobilepeft.demo"
    compileSdk = 34

    defaultConfig {
        applicationId = "org.mobilepeft.demo"
        minSdk = 26 // java.nio.file (atomic rename) needs API 26
        targetSdk = 34
        versionCode = 1
        versionName = "0.1"
        ndk {
            // Both runtimes ship arm64 and x86_64 native libraries (device + emulator).
            abiFilters += listOf("arm64-v8a", "x86_64")
        }
    }

    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions {
        jvmTarget = "17"
    }

    packaging {
        // Both AARs bring libc++_shared.so.
        jniLibs.pickFirsts += "**/libc++_shared.so"
    }
}

dependencies {
    implementation(project(":core"))
    // FileProvider: the camera's output file and sharing the personal adapter.
    implementation("androidx.core:core:1.13.1")
    implementation("org.pytorch:executorch-android:$executorchVersion")
    // ExecuTorch's AAR loads its native library through fbjni + SoLoader's nativeloader; the Maven POM
    // should bring these, listed to match extension/android/executorch_android/build.gradle.
    implementation("com.facebook.fbjni:fbjni:0.7.0")
    implementation("com.facebook.soloader:nativeloader:0.10.5")
    implementation("com.microsoft.onnxruntime:onnxruntime-training-android:$onnxruntimeTrainingVersion")
}

// Neurite as an Android library (AAR): the generated Kotlin API plus libneurite_ffi.so for
// arm64-v8a, armeabi-v7a and x86_64. Build everything with android/build-aar.sh (cargo-ndk,
// the Android SDK and NDK, Gradle); it generates the Kotlin sources and the .so files first.
plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.2.20"
}

android {
    namespace = "org.neurite"
    compileSdk = 35
    defaultConfig {
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    sourceSets["main"].jniLibs.srcDirs("src/main/jniLibs")
}

kotlin {
    jvmToolchain(17)
}

dependencies {
    implementation("net.java.dev.jna:jna:5.17.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-core:1.10.2")
}
